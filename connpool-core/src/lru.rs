//! The order in which idle connections came back, across destinations, for `max_idle_total`:
//! a doubly linked list in a slab, so that pushing, unlinking and taking the oldest are all O(1).

/// A slot number in the list; idle connections remember theirs.
pub(crate) type LruKey = usize;

const NIL: usize = usize::MAX;

pub(crate) struct Lru<T> {
    nodes: Vec<Node<T>>,
    free: Vec<usize>,
    head: usize,
    tail: usize,
}

struct Node<T> {
    value: Option<T>,
    prev: usize,
    next: usize,
}

impl<T> Lru<T> {
    pub(crate) fn new() -> Self {
        Lru {
            nodes: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
        }
    }

    /// Adds `value` as the most recent; returns its key.
    pub(crate) fn push_back(&mut self, value: T) -> LruKey {
        let node = Node {
            value: Some(value),
            prev: self.tail,
            next: NIL,
        };
        let key = match self.free.pop() {
            Some(key) => {
                self.nodes[key] = node;
                key
            }
            None => {
                self.nodes.push(node);
                self.nodes.len() - 1
            }
        };
        match self.tail {
            NIL => self.head = key,
            tail => self.nodes[tail].next = key,
        }
        self.tail = key;
        key
    }

    /// Takes `key` out of the list; `None` if it is not in it.
    pub(crate) fn remove(&mut self, key: LruKey) -> Option<T> {
        let node = self.nodes.get_mut(key)?;
        let value = node.value.take()?;
        let (prev, next) = (node.prev, node.next);
        match prev {
            NIL => self.head = next,
            prev => self.nodes[prev].next = next,
        }
        match next {
            NIL => self.tail = prev,
            next => self.nodes[next].prev = prev,
        }
        self.free.push(key);
        Some(value)
    }

    /// The least recent value and its key.
    pub(crate) fn front(&self) -> Option<(LruKey, &T)> {
        let node = self.nodes.get(self.head)?;
        node.value.as_ref().map(|value| (self.head, value))
    }

    /// How many values are in the list.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.nodes.len() - self.free.len()
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
