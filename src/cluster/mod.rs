//! The HA pair's report: a session's audit records gathered from every node in its
//! node set. This node's records come from its own audit log; the others' from their
//! control API's internal endpoint (`GET /internal/records/{id}`, control credentials
//! required), which every node serves for its peers.
//!
//! It must never return records with holes: if a node of the set does not answer, the
//! whole gathering fails naming that node.

mod peer;

use std::sync::Arc;
use std::time::Duration;

use fetchgate_storage::{AuditLog, AuditRecord, NodeId, SessionId, Timestamp};
use serde::{Deserialize, Serialize};

pub use self::peer::Peer;
use crate::config::Credentials;
use crate::session::membership::Membership;

/// How long a peer gets to answer with a session's records.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(5);

/// One node's records of one session, in append order: the internal endpoint's answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct NodeRecords {
    pub node: NodeId,
    pub records: Vec<AuditRecord>,
}

/// Why a session's records could not be gathered.
#[derive(Debug, thiserror::Error)]
pub enum GatherError {
    #[error("node {node} served this session and cannot be reached: {reason}")]
    Unreachable { node: NodeId, reason: String },
    #[error(transparent)]
    Storage(#[from] fetchgate_storage::Error),
}

/// This node's view of the pair.
pub struct Cluster {
    peers: Vec<Peer>,
    credentials: Credentials,
}

impl Cluster {
    /// The pair as seen from here: the other nodes' control URLs, and the control
    /// credentials they share.
    pub fn new(peers: Vec<Peer>, credentials: Credentials) -> Self {
        Cluster { peers, credentials }
    }

    /// Every record of the session from every node of its node set, in one order
    /// whichever node gathers them: by time, then node, then append order.
    pub async fn gather(
        &self,
        membership: &Membership,
        log: &Arc<dyn AuditLog>,
        id: SessionId,
    ) -> Result<Vec<AuditRecord>, GatherError> {
        let members = membership.sets().members(id).await?;
        let mut sources = vec![NodeRecords {
            node: membership.node().clone(),
            records: log.scan(id).await?,
        }];
        let others: Vec<&NodeId> = members.iter().filter(|n| *n != membership.node()).collect();
        if !others.is_empty() {
            let credentials = self.credentials.to_pair();
            let answers = join_all(self.peers.iter().map(|p| {
                let (p, credentials) = (p.clone(), credentials.clone());
                async move { p.records(id, &credentials, PEER_TIMEOUT).await }
            }))
            .await;
            let mut failures = Vec::new();
            for answer in answers {
                match answer {
                    Ok(r) => sources.push(r),
                    Err(e) => failures.push(e),
                }
            }
            for node in others {
                if !sources.iter().any(|s| &s.node == node) {
                    return Err(GatherError::Unreachable {
                        node: node.clone(),
                        reason: if failures.is_empty() {
                            "no configured peer is this node".to_owned()
                        } else {
                            failures.join("; ")
                        },
                    });
                }
            }
        }
        Ok(merge(sources))
    }
}

/// Runs the futures concurrently and returns their outputs in order.
async fn join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        match h.await {
            Ok(v) => out.push(v),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    out
}

fn record_time(r: &AuditRecord) -> Timestamp {
    match r {
        AuditRecord::Download(d) => d.start,
        AuditRecord::Denied(d) => d.time,
    }
}

/// One sequence of every node's records: by time, then node name, then append order.
fn merge(sources: Vec<NodeRecords>) -> Vec<AuditRecord> {
    let mut keyed: Vec<(Timestamp, NodeId, usize, AuditRecord)> = sources
        .into_iter()
        .flat_map(|s| {
            let node = s.node;
            s.records
                .into_iter()
                .enumerate()
                .map(move |(seq, r)| (record_time(&r), node.clone(), seq, r))
        })
        .collect();
    keyed.sort_by(|a, b| (a.0, &a.1, a.2).cmp(&(b.0, &b.1, b.2)));
    keyed.into_iter().map(|(_, _, _, r)| r).collect()
}

#[cfg(test)]
mod tests {
    use fetchgate_storage::{Denied, DeniedStage};

    use super::*;

    fn denied(at: i64, url: &str) -> AuditRecord {
        AuditRecord::Denied(Denied {
            time: Timestamp::from_micros(at),
            method: "GET".into(),
            url: url.into(),
            client_address: String::new(),
            reason: String::new(),
            stage: DeniedStage::Acl,
        })
    }

    #[test]
    fn merged_records_do_not_depend_on_which_node_gathers() {
        let a = || NodeRecords {
            node: "a".parse().unwrap(),
            records: vec![denied(1, "a1"), denied(5, "a2"), denied(5, "a3")],
        };
        let b = || NodeRecords {
            node: "b".parse().unwrap(),
            records: vec![denied(3, "b1"), denied(5, "b2")],
        };
        let on_a = merge(vec![a(), b()]);
        let on_b = merge(vec![b(), a()]);
        assert_eq!(on_a, on_b);
        let urls: Vec<_> = on_a
            .iter()
            .map(|r| match r {
                AuditRecord::Denied(d) => d.url.as_str(),
                AuditRecord::Download(d) => d.url.as_str(),
            })
            .collect();
        assert_eq!(urls, ["a1", "b1", "a2", "a3", "b2"]);
    }
}
