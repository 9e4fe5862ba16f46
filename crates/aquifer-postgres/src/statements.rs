//! A small LRU of prepared statements, per connection.

use std::collections::HashMap;

use tokio_postgres::Statement;

/// A small LRU of prepared statements.
pub(crate) struct StatementCache {
    capacity: usize,
    tick: u64,
    map: HashMap<String, (Statement, u64)>,
}

impl StatementCache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            tick: 0,
            map: HashMap::new(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn get(&mut self, sql: &str) -> Option<Statement> {
        self.tick += 1;
        let tick = self.tick;
        self.map.get_mut(sql).map(|(st, used)| {
            *used = tick;
            st.clone()
        })
    }

    pub(crate) fn insert(&mut self, sql: &str, st: Statement) {
        if self.capacity == 0 {
            return;
        }
        if self.map.len() >= self.capacity {
            let oldest = self
                .map
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone());
            // Dropping the statement closes it on the server.
            if let Some(k) = oldest {
                self.map.remove(&k);
            }
        }
        self.tick += 1;
        self.map.insert(sql.to_owned(), (st, self.tick));
    }

    pub(crate) fn clear(&mut self) {
        self.map.clear();
    }
}
