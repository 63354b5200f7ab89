//! Background housekeeping: the reaper ends sessions whose timeout has passed, and the
//! retention sweeper deletes the data of sessions that ended longer ago than the
//! retention period. Both are idempotent, so a crash between two steps is repaired on
//! the next round.

use std::sync::Arc;
use std::time::Duration;

use fetchgate_storage::Timestamp;
use tokio::sync::watch;

use super::{Sessions, remove_dir};

/// Ends every session whose timeout has passed; returns how many it ended.
pub async fn reap_expired(sessions: &Sessions) -> Result<usize, super::SessionError> {
    let now = Timestamp::now();
    let mut n = 0;
    for h in sessions.store().list_live().await? {
        if h.ended.is_none() && now >= h.expires_at() {
            sessions.expire(&h).await?;
            n += 1;
        }
    }
    Ok(n)
}

/// Deletes records, spool files and headers of sessions that ended before
/// `now - retention`; returns how many it deleted.
pub async fn sweep_retained(
    sessions: &Sessions,
    retention: Duration,
) -> Result<usize, super::SessionError> {
    let cutoff = Timestamp::now().minus_secs(retention.as_secs());
    let mut n = 0;
    loop {
        let batch = sessions.store().ended_before(cutoff, 256).await?;
        let mut purged = 0;
        for &id in &batch {
            // Records first, header last: until the header is gone the session stays
            // in the queue and a crash here is finished by the next sweep.
            sessions.log().delete(id).await?;
            remove_dir(&sessions.spool_path(id)).await?;
            // In an HA pair the header goes with the last node that held records of it;
            // until then the other nodes' sweepers must still find it in the queue.
            let last = match sessions.membership() {
                Some(m) => m.leave(id).await?,
                None => true,
            };
            if last {
                sessions.store().purge(id).await?;
                purged += 1;
                tracing::info!(session = %id, "retention period over; session data deleted");
            } else {
                tracing::debug!(session = %id, "retention period over; this node's records deleted, other nodes still hold theirs");
            }
            n += 1;
        }
        if purged == 0 {
            // Empty, or only sessions other nodes still have to sweep: done for now.
            return Ok(n);
        }
    }
}

/// Runs `round` every `every` until `stop` fires, logging failures.
pub async fn every<F, Fut>(
    every: Duration,
    mut stop: watch::Receiver<bool>,
    name: &'static str,
    mut round: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<usize, super::SessionError>>,
{
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        if let Err(e) = round().await {
            tracing::warn!(task = name, error = %e, "housekeeping round failed; retrying next round");
        }
    }
}

/// Starts the reaper and the sweeper.
pub fn spawn(
    sessions: Arc<Sessions>,
    reaper_interval: Duration,
    retention: Duration,
    sweep_interval: Duration,
    stop: watch::Receiver<bool>,
) {
    let s = Arc::clone(&sessions);
    tokio::spawn(every(reaper_interval, stop.clone(), "reaper", move || {
        let s = Arc::clone(&s);
        async move { reap_expired(&s).await }
    }));
    tokio::spawn(every(
        sweep_interval,
        stop,
        "retention-sweeper",
        move || {
            let s = Arc::clone(&sessions);
            async move { sweep_retained(&s, retention).await }
        },
    ));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SessionConfig;
    use crate::session::{Finish, NewSession, State, state};
    use fetchgate_storage::memory::MemoryStorage;
    use fetchgate_storage::{AuditRecord, Denied, DeniedStage};

    fn service(spool: &std::path::Path) -> Sessions {
        let store = Arc::new(MemoryStorage::new());
        let config = SessionConfig {
            default_timeout_secs: 60,
            max_timeout_secs: 3600,
            reaper_interval: Duration::from_secs(1),
        };
        Sessions::new(store.clone(), store, spool.into(), config, false)
    }

    #[tokio::test]
    async fn reaper_ends_expired_sessions_as_of_their_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let s = service(dir.path());
        let (live, _) = s.create(NewSession::default()).await.unwrap();
        let (short, _) = s
            .create(NewSession {
                timeout_secs: Some(1),
                ..Default::default()
            })
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(reap_expired(&s).await.unwrap(), 1);
        let h = s.get(short.id).await.unwrap();
        assert_eq!(state(&h, Timestamp::now()), State::Expired);
        assert_eq!(h.ended.unwrap().at, short.expires_at());
        assert_eq!(
            state(&s.get(live.id).await.unwrap(), Timestamp::now()),
            State::Active
        );
        // A second round finds nothing more to do.
        assert_eq!(reap_expired(&s).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn revoking_ending_and_expiring_tell_the_finished_hooks() {
        let dir = tempfile::tempdir().unwrap();
        let s = service(dir.path());
        let told = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = Arc::clone(&told);
        s.on_finished(move |h, how| sink.lock().unwrap().push((h.id, how)));
        let (revoked, token) = s.create(NewSession::default()).await.unwrap();
        let (ended, _) = s.create(NewSession::default()).await.unwrap();
        let (expiring, _) = s
            .create(NewSession {
                timeout_secs: Some(1),
                ..Default::default()
            })
            .await
            .unwrap();
        s.revoke(revoked.id, token.expose()).await.unwrap();
        s.end(ended.id).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(reap_expired(&s).await.unwrap(), 1);
        assert_eq!(
            *told.lock().unwrap(),
            vec![
                (revoked.id, Finish::Revoked),
                (ended.id, Finish::Ended),
                (expiring.id, Finish::Expired)
            ]
        );
    }

    #[tokio::test]
    async fn sweeper_deletes_only_sessions_past_retention() {
        let dir = tempfile::tempdir().unwrap();
        let s = service(dir.path());
        let (old, _) = s.create(NewSession::default()).await.unwrap();
        let (live, _) = s.create(NewSession::default()).await.unwrap();
        let record = AuditRecord::Denied(Denied {
            time: Timestamp::now(),
            method: "GET".into(),
            url: "http://x/".into(),
            client_address: "127.0.0.1:1".into(),
            reason: "r".into(),
            stage: DeniedStage::Acl,
        });
        s.log().append(old.id, record.clone()).await.unwrap();
        s.log().append(live.id, record).await.unwrap();
        std::fs::create_dir_all(s.spool_path(old.id)).unwrap();
        s.end(old.id).await.unwrap();

        assert_eq!(
            sweep_retained(&s, Duration::from_secs(3600)).await.unwrap(),
            0
        );
        assert!(s.store().get(old.id).await.unwrap().is_some());

        assert_eq!(sweep_retained(&s, Duration::ZERO).await.unwrap(), 1);
        assert!(s.store().get(old.id).await.unwrap().is_none());
        assert!(s.log().scan(old.id).await.unwrap().is_empty());
        assert!(!s.spool_path(old.id).exists());
        assert_eq!(s.log().scan(live.id).await.unwrap().len(), 1);
    }
}
