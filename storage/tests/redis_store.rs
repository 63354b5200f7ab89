//! What the Redis backend does beyond the trait-level suite: key expiry, the node sets,
//! invalidations between two nodes' stores, and riding out a server restart.

mod support;

use std::time::{Duration, Instant};

use fetchgate_storage::redis_store::{CACHE_TTL, KEY_GRACE, RedisConfig, RedisStorage};
use fetchgate_storage::{
    EndReason, NodeId, NodeSets, Policy, SessionHeader, SessionId, SessionStore, Timestamp,
};

const RETENTION: Duration = Duration::from_secs(3600);

async fn connect(server: &support::RedisServer) -> RedisStorage {
    RedisStorage::connect(&RedisConfig {
        url: server.url(),
        key_prefix: "t:".into(),
        retention: RETENTION,
    })
    .await
    .unwrap()
}

fn live_header(n: u8, timeout_secs: u64) -> SessionHeader {
    SessionHeader::new(
        SessionId::from_bytes([n; 16]),
        [n; 32],
        Policy::Strict,
        Timestamp::now(),
        timeout_secs,
    )
}

async fn pttl(server: &support::RedisServer, key: &str) -> i64 {
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("PTTL")
        .arg(key)
        .query_async(&mut conn)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn session_keys_expire_with_the_session_plus_retention() {
    let server = support::RedisServer::start();
    let store = connect(&server).await;
    let h = live_header(1, 60);
    store.create(&h).await.unwrap();
    let key = format!("t:session:{}", h.id);
    let want = (60 + RETENTION.as_secs() + KEY_GRACE.as_secs()) as i64 * 1000;
    let ttl = pttl(&server, &key).await;
    assert!((want - 5_000..=want).contains(&ttl), "{ttl} vs {want}");
    store.set_timeout(h.id, 600).await.unwrap();
    let want = (600 + RETENTION.as_secs() + KEY_GRACE.as_secs()) as i64 * 1000;
    let ttl = pttl(&server, &key).await;
    assert!((want - 5_000..=want).contains(&ttl), "{ttl} vs {want}");
}

#[tokio::test(flavor = "multi_thread")]
async fn node_sets_collect_each_node_once_and_count_who_is_left() {
    let server = support::RedisServer::start();
    let store = connect(&server).await;
    let h = live_header(2, 60);
    let (a, b): (NodeId, NodeId) = ("b-node".parse().unwrap(), "a-node".parse().unwrap());
    store.join(h.id, &a).await.unwrap();
    assert!(
        store.members(h.id).await.unwrap().is_empty(),
        "unknown session"
    );
    store.create(&h).await.unwrap();
    for n in [&a, &b, &a] {
        store.join(h.id, n).await.unwrap();
    }
    assert_eq!(
        store.members(h.id).await.unwrap(),
        vec![b.clone(), a.clone()]
    );
    assert!(pttl(&server, &format!("t:nodes:{}", h.id)).await > 0);
    assert_eq!(store.leave(h.id, &a).await.unwrap(), 1);
    assert_eq!(
        store.leave(h.id, &a).await.unwrap(),
        1,
        "leaving twice is harmless"
    );
    assert_eq!(store.members(h.id).await.unwrap(), vec![b.clone()]);
    store.join(h.id, &a).await.unwrap();
    store.purge(h.id).await.unwrap();
    assert!(store.members(h.id).await.unwrap().is_empty());
}

/// How many times the server ran `command` (lower case), from `INFO commandstats`.
async fn calls(server: &support::RedisServer, command: &str) -> u64 {
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .unwrap();
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |rest| rest.split(',').next().unwrap().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn proxy_authentication_reads_are_served_from_the_cache_and_the_subscription_holds() {
    let server = support::RedisServer::start();
    let store = connect(&server).await;
    let h = live_header(5, 60);
    store.create(&h).await.unwrap();
    // Several liveness checks of the invalidation channel pass in this time.
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(
        calls(&server, "subscribe").await,
        1,
        "the invalidation channel was subscribed again: its liveness check failed"
    );
    let before = calls(&server, "hgetall").await;
    for _ in 0..20 {
        let got = store.get_for_auth(h.id).await.unwrap().unwrap();
        assert_eq!(got.id, h.id);
    }
    let read = calls(&server, "hgetall").await - before;
    assert_eq!(
        read, 1,
        "20 reads within the cache's TTL asked Redis {read} times"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn listing_live_sessions_reads_none_of_the_ended_ones() {
    let server = support::RedisServer::start();
    let store = connect(&server).await;
    for n in 10..40 {
        store.create(&live_header(n, 60)).await.unwrap();
        if n >= 12 {
            store
                .end(live_header(n, 60).id, Timestamp::now(), EndReason::Ended)
                .await
                .unwrap();
        }
    }
    let before = calls(&server, "hgetall").await;
    let live = store.list_live().await.unwrap();
    assert_eq!(live.len(), 2);
    assert_eq!(
        calls(&server, "hgetall").await - before,
        2,
        "only the live sessions' hashes are read"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_created_before_the_live_set_are_listed_after_a_restart() {
    let server = support::RedisServer::start();
    let (old, ended) = (live_header(50, 60), live_header(51, 60));
    {
        let store = connect(&server).await;
        store.create(&old).await.unwrap();
        store.create(&ended).await.unwrap();
        store
            .end(ended.id, Timestamp::now(), EndReason::Ended)
            .await
            .unwrap();
    }
    // As a version without the live set would have left them.
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let () = redis::cmd("DEL")
        .arg("t:live")
        .query_async(&mut conn)
        .await
        .unwrap();
    let store = connect(&server).await;
    let live: Vec<_> = store
        .list_live()
        .await
        .unwrap()
        .iter()
        .map(|h| h.id)
        .collect();
    assert_eq!(live, vec![old.id]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revocation_reaches_the_other_nodes_cached_read_at_once() {
    let server = support::RedisServer::start();
    let (node_a, node_b) = (connect(&server).await, connect(&server).await);
    let h = live_header(3, 60);
    node_a.create(&h).await.unwrap();
    // Let both subscriptions come up, then warm node B's cache.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        node_b.get_for_auth(h.id).await.unwrap().unwrap().revoked,
        None
    );
    let revoked_at = Instant::now();
    node_a.revoke(h.id, Timestamp::now()).await.unwrap();
    loop {
        if node_b
            .get_for_auth(h.id)
            .await
            .unwrap()
            .unwrap()
            .revoked
            .is_some()
        {
            break;
        }
        assert!(
            revoked_at.elapsed() < CACHE_TTL / 4,
            "node B still sees the session live"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_outage_is_reported_and_survived() {
    let mut server = support::RedisServer::start();
    let store = connect(&server).await;
    store.check_health().await.unwrap();
    let h = live_header(4, 60);
    store.create(&h).await.unwrap();
    // The new server is empty (no persistence here): what matters is that the store
    // reconnects by itself and does not serve the old session from its cache.
    assert_eq!(store.get(h.id).await.unwrap(), Some(h.clone()));
    server.kill();
    assert!(store.check_health().await.is_err());
    assert!(
        store.get(h.id).await.is_err(),
        "served from the cache during an outage"
    );
    server.revive();
    let deadline = Instant::now() + Duration::from_secs(5);
    while store.check_health().await.is_err() {
        assert!(Instant::now() < deadline, "the store did not reconnect");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(store.get(h.id).await.unwrap(), None);
    store.create(&h).await.unwrap();
    assert_eq!(store.get(h.id).await.unwrap(), Some(h));
}
