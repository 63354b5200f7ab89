//! This node's membership in the sessions it serves, for an HA pair: before the first
//! request of a session is served here, this node joins the session's node set in the
//! shared store, so a report gathered on any node knows to ask this one.
//!
//! It must never let a request through whose membership is not stored: a report would
//! then silently miss this node's records.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use fetchgate_storage::{NodeId, NodeSets, SessionId};
use lru::LruCache;

/// Sessions remembered as joined; forgetting one only costs one more `join`.
const REMEMBERED: usize = 4096;

/// This node's name and the shared node sets.
pub struct Membership {
    node: NodeId,
    sets: Arc<dyn NodeSets>,
    joined: Mutex<LruCache<SessionId, ()>>,
}

impl Membership {
    /// Membership of `node` in the sets kept by `sets`.
    pub fn new(node: NodeId, sets: Arc<dyn NodeSets>) -> Self {
        Membership {
            node,
            sets,
            joined: Mutex::new(LruCache::new(
                NonZeroUsize::new(REMEMBERED).unwrap_or(NonZeroUsize::MIN),
            )),
        }
    }

    /// This node's name.
    pub fn node(&self) -> &NodeId {
        &self.node
    }

    /// The shared node sets.
    pub fn sets(&self) -> &Arc<dyn NodeSets> {
        &self.sets
    }

    /// Leaves the session's node set after this node deleted its records of it;
    /// returns whether no node is left (the session itself may then go).
    pub async fn leave(&self, id: SessionId) -> Result<bool, fetchgate_storage::Error> {
        self.joined
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop(&id);
        Ok(self.sets.leave(id, &self.node).await? == 0)
    }

    /// Joins the session's node set, once per session as far as this process remembers.
    pub async fn join(&self, id: SessionId) -> Result<(), fetchgate_storage::Error> {
        let known = self
            .joined
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .is_some();
        if known {
            return Ok(());
        }
        self.sets.join(id, &self.node).await?;
        self.joined
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .put(id, ());
        Ok(())
    }
}
