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
        let mut free = 0;
        let mut at = self.free;
        while let Some(node) = self.nodes.get(at) {
            free += 1;
            at = node.next;
        }
        self.nodes.len() - free
    }
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
}
