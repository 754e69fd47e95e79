//! The limiter's unit tests: budgets per network, the pending-init cap, connect and
//! erase budgets, and a reload.

use super::*;

fn n(v: u32) -> NonZeroU32 {
    NonZeroU32::new(v).unwrap()
}

fn ip(last: u8) -> IpAddr {
    IpAddr::from([192, 0, 2, last])
}

fn budgets(init: u32, auth: u32, pending: u64) -> Budgets {
    Budgets {
        init_per_minute: n(init),
        auth_failures_per_minute: n(auth),
        max_pending_inits: pending,
        client_prefix: ClientPrefix::default(),
    }
}

fn budget(calls: u32, users: u32, window: u64) -> ConnectBudget {
    ConnectBudget {
        calls_per_minute: n(calls),
        users_per_window: users,
        window: Duration::from_secs(window),
        erase_per_minute: n(2),
        id_token_failures_per_minute: n(3),
    }
}

/// Admits and records an init as the server does; returns its evicted one.
fn issue(limiter: &Limiter, client: IpAddr, id: u8) -> Result<Option<Pseudonym>, Refusal> {
    let admission = limiter.admit_init(client)?;
    limiter.init_issued(&admission, [id; 32], u64::MAX);
    Ok(admission.evict)
}

#[test]
fn init_budgets_are_per_network() {
    let limiter = Limiter::new(budgets(2, 5, 100), []);
    assert!(limiter.admit_init(ip(1)).is_ok());
    assert!(limiter.admit_init(ip(2)).is_ok(), "same /24, same budget");
    let refused = limiter.admit_init(ip(3)).unwrap_err();
    assert_eq!(refused.limit(), "init");
    assert!(refused.retry_after() >= 1);
    assert!(limiter.admit_init(IpAddr::from([198, 51, 100, 1])).is_ok(), "another network");
    // One IPv6 /64 is one client, however many addresses it rotates through.
    let v6 = |last: u16| IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, last]);
    assert!(limiter.admit_init(v6(1)).is_ok());
    assert!(limiter.admit_init(v6(2)).is_ok());
    assert_eq!(limiter.admit_init(v6(3)).unwrap_err().limit(), "init");
    assert!(limiter.admit_init(IpAddr::from([0x2001, 0xdb8, 0, 1, 0, 0, 0, 1])).is_ok(), "another /64");
}

#[test]
fn a_full_pending_cap_takes_room_from_the_network_holding_the_most() {
    let limiter = Limiter::new(budgets(100, 5, 3), []);
    let attacker = IpAddr::from([203, 0, 113, 1]);
    for id in 1..=3 {
        assert_eq!(issue(&limiter, attacker, id), Ok(None));
    }
    // The attacker holds every place: it cannot take one more from itself...
    assert_eq!(issue(&limiter, attacker, 4).unwrap_err().limit(), "pending_inits");
    // ...but anyone else gets one, from the attacker's oldest.
    assert_eq!(issue(&limiter, ip(1), 10), Ok(Some([1; 32])));
    assert_eq!(issue(&limiter, IpAddr::from([198, 51, 100, 1]), 11), Ok(Some([2; 32])));
    // Now the attacker holds 1, like the others: ties go to the oldest holder.
    assert_eq!(issue(&limiter, IpAddr::from([198, 51, 101, 1]), 12), Ok(Some([3; 32])));
    // A redeemed init frees a place for anyone.
    limiter.init_consumed(Some(&[10; 32]));
    assert_eq!(issue(&limiter, ip(1), 13), Ok(None));
}

#[test]
fn failed_authentications_block_a_network_after_its_budget() {
    let limiter = Limiter::new(budgets(10, 2, 100), []);
    let net = |ip: IpAddr| limiter.network_of(ip);
    for _ in 0..2 {
        limiter.auth_failed(net(ip(1)));
        assert!(limiter.admit_signed(net(ip(1))).is_ok());
    }
    limiter.auth_failed(net(ip(1)));
    assert_eq!(limiter.admit_signed(net(ip(1))).unwrap_err().limit(), "auth_failures");
    assert_eq!(limiter.admit_signed(net(ip(2))).unwrap_err().limit(), "auth_failures", "same /24");
    assert!(limiter.admit_signed(IpNet::from(ip(2))).is_ok(), "a single address is its own key");
    assert!(limiter.admit_signed(net(IpAddr::from([198, 51, 100, 1]))).is_ok());
}

#[test]
fn connect_budgets_count_calls_and_distinct_users() {
    let limiter = Limiter::new(budgets(10, 10, 100), [("shop".to_owned(), budget(100, 2, 3600))]);
    assert!(limiter.admit_connect("shop", &[1; 32]).is_ok());
    assert!(limiter.admit_connect("shop", &[2; 32]).is_ok());
    assert!(limiter.admit_connect("shop", &[1; 32]).is_ok(), "a known user again is fine");
    assert_eq!(limiter.admit_connect("shop", &[3; 32]).unwrap_err().limit(), "connect_users");
    assert!(limiter.admit_connect("other", &[3; 32]).is_ok(), "unknown namespaces are not limited here");

    let limiter = Limiter::new(budgets(10, 10, 100), [("shop".to_owned(), budget(1, 100, 60))]);
    assert!(limiter.admit_connect("shop", &[1; 32]).is_ok());
    assert_eq!(limiter.admit_connect("shop", &[1; 32]).unwrap_err().limit(), "connect_calls");
}

#[test]
fn erasures_have_a_budget_per_namespace() {
    let limiter = Limiter::new(budgets(10, 10, 100), [("shop".to_owned(), budget(100, 100, 60))]);
    assert!(limiter.admit_erase("shop").is_ok());
    assert!(limiter.admit_erase("shop").is_ok());
    assert_eq!(limiter.admit_erase("shop").unwrap_err().limit(), "erase_calls");
}

#[test]
fn a_reload_keeps_unchanged_budgets_and_drops_removed_ones() {
    let limiter = Limiter::new(budgets(10, 10, 100), [("shop".to_owned(), budget(1, 100, 60))]);
    assert!(limiter.admit_connect("shop", &[1; 32]).is_ok());
    limiter.set_namespaces([("shop".to_owned(), budget(1, 100, 60))]);
    assert_eq!(limiter.admit_connect("shop", &[1; 32]).unwrap_err().limit(), "connect_calls", "state kept");
    limiter.set_namespaces([("shop".to_owned(), budget(2, 100, 60))]);
    assert!(limiter.admit_connect("shop", &[1; 32]).is_ok(), "a changed budget starts afresh");
}
