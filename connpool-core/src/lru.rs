//! The order in which idle connections came back, across destinations, for `max_idle_total`:
//! a doubly linked list in a slab, so that pushing, unlinking and taking the oldest are all O(1).

/// A slot number in the list; idle connections remember theirs.
pub(crate) type LruKey = usize;

const NIL: usize = usize::MAX;

pub(crate) struct Lru<T> {
    nodes: Vec<Node<T>>,
    /// The first free node; free nodes are chained through `next`.
    free: usize,
    head: usize,
    tail: usize,
    /// How many nodes are in use.
    len: usize,
}

/// A node in use has `prev != FREE`; a free one keeps its last value, which is never read.
struct Node<T> {
    value: T,
    prev: usize,
    next: usize,
}

/// The `prev` of a free node (a node in use has `NIL` or an index there).
const FREE: usize = usize::MAX - 1;

impl<T: Copy> Lru<T> {
    pub(crate) fn new() -> Self {
        Lru {
            nodes: Vec::new(),
            free: NIL,
            head: NIL,
            tail: NIL,
            len: 0,
        }
    }

    /// Adds `value` as the most recent; returns its key.
    #[inline]
    pub(crate) fn push_back(&mut self, value: T) -> LruKey {
        let node = Node {
            value,
            prev: self.tail,
            next: NIL,
        };
        let key = match self.nodes.get_mut(self.free) {
            Some(free) => {
                let key = self.free;
                self.free = free.next;
                *free = node;
                key
            }
            None => {
                self.nodes.push(node);
                self.nodes.len() - 1
            }
        };
        match self.nodes.get_mut(self.tail) {
            Some(tail) => tail.next = key,
            None => self.head = key,
        }
        self.tail = key;
        self.len += 1;
        key
    }

    /// Takes `key` out of the list; `None` if it is not in it.
    #[inline]
    pub(crate) fn remove(&mut self, key: LruKey) -> Option<T> {
        let node = self.nodes.get_mut(key).filter(|node| node.prev != FREE)?;
        let (value, prev, next) = (node.value, node.prev, node.next);
        node.prev = FREE;
        node.next = self.free;
        self.free = key;
        self.len -= 1;
        match self.nodes.get_mut(prev) {
            Some(prev) => prev.next = next,
            None => self.head = next,
        }
        match self.nodes.get_mut(next) {
            Some(next) => next.prev = prev,
            None => self.tail = prev,
        }
        Some(value)
    }

    /// The least recent value and its key.
    pub(crate) fn front(&self) -> Option<(LruKey, &T)> {
        let node = self.nodes.get(self.head)?;
        Some((self.head, &node.value))
    }

    /// How many values are in the list.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// How many nodes the list has room for.
    pub(crate) fn capacity(&self) -> usize {
        self.nodes.capacity()
    }

    /// The bytes the list holds.
    #[cfg(test)]
    pub(crate) fn allocation_size(&self) -> usize {
        self.capacity() * std::mem::size_of::<Node<T>>()
    }

    /// Whether most of the memory is free nodes: a burst of values came and went.
    pub(crate) fn is_sparse(&self) -> bool {
        is_sparse(self.len, self.capacity())
    }

    /// Moves the values to the front in their order, with room for as many again, and gives the
    /// rest of the memory back. Returns where each key went (`moved[old]`; a free key's entry is
    /// never read), for the holders of the keys to follow.
    #[cold]
    pub(crate) fn compact(&mut self) -> Vec<LruKey> {
        let mut moved = vec![NIL; self.nodes.len()];
        let mut nodes: Vec<Node<T>> = Vec::with_capacity(self.len * 2);
        let mut at = self.head;
        while let Some(node) = self.nodes.get(at) {
            let key = nodes.len();
            moved[at] = key;
            if let Some(prev) = nodes.last_mut() {
                prev.next = key;
            }
            nodes.push(Node {
                value: node.value,
                prev: key.checked_sub(1).unwrap_or(NIL),
                next: NIL,
            });
            at = node.next;
        }
        self.head = if nodes.is_empty() { NIL } else { 0 };
        self.tail = nodes.len().checked_sub(1).unwrap_or(NIL);
        self.free = NIL;
        self.nodes = nodes;
        moved
    }
}

/// Whether a collection holding `len` values in room for `capacity` should give memory back:
/// less than a quarter full, past a small size. The destinations' tables and this list go by it.
pub(crate) fn is_sparse(len: usize, capacity: usize) -> bool {
    capacity > 64 && len < capacity / 4
}

#[cfg(test)]
mod tests {
    use super::Lru;

    #[test]
    fn keeps_order_through_removals() {
        let mut lru = Lru::new();
        let keys: Vec<_> = (0..5).map(|i| lru.push_back(i)).collect();
        assert_eq!(lru.remove(keys[0]), Some(0));
        assert_eq!(lru.remove(keys[2]), Some(2));
        assert_eq!(lru.remove(keys[2]), None);
        assert_eq!(lru.front().map(|(_, v)| *v), Some(1));
        let six = lru.push_back(6);
        assert_eq!(lru.remove(keys[1]), Some(1));
        assert_eq!(lru.remove(keys[3]), Some(3));
        assert_eq!(lru.remove(keys[4]), Some(4));
        assert_eq!(lru.front(), Some((six, &6)));
        assert_eq!(lru.len(), 1);
        assert_eq!(lru.remove(six), Some(6));
        assert!(lru.front().is_none());
        assert_eq!(lru.len(), 0);
    }

    #[test]
    fn compacting_keeps_order_and_gives_the_memory_back() {
        let mut lru = Lru::new();
        let keys: Vec<_> = (0..1000).map(|i| lru.push_back(i)).collect();
        // Keep every hundredth, out of their slots' order: 300 pushed again after 0.
        for (i, key) in keys.iter().enumerate() {
            if i % 100 != 0 || i == 300 {
                lru.remove(*key);
            }
        }
        let late = lru.push_back(300);
        assert!(lru.is_sparse());
        let moved = lru.compact();
        assert!(!lru.is_sparse());
        assert!(lru.nodes.capacity() <= 20, "{}", lru.nodes.capacity());
        assert_eq!(lru.len(), 10);
        let mut order = Vec::new();
        while let Some((key, value)) = lru.front().map(|(key, value)| (key, *value)) {
            order.push(value);
            assert_eq!(lru.remove(key), Some(value));
        }
        assert_eq!(order, [0, 100, 200, 400, 500, 600, 700, 800, 900, 300]);
        assert_eq!(moved[late], 9);
        assert_eq!(moved[keys[100]], 1);
        // And it goes on working: pushes after a compaction.
        let a = lru.push_back(1);
        let b = lru.push_back(2);
        assert_eq!(lru.remove(a), Some(1));
        assert_eq!(lru.front(), Some((b, &2)));
    }
}
