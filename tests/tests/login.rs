//! Guessing passwords against a real controller process over HTTPS: racing logins for one
//! account, the same account typed several ways (MariaDB's collation), the current-password
//! check of a password change (API and web UI), what a failed login leaves in the audit, and
//! whether a deactivated account answers faster than a wrong password.
//!
//! Every client here comes from 127.0.0.1, one address with an allowance of 20 failures per
//! controller: each test keeps below it, so what it sees is the account's throttle.

use std::time::{Duration, Instant};

use outpost_controller::model::{Paging, Role, User};
use outpost_controller::store::audit::{Actor, AuditFilter};
use outpost_controller::store::users::UserPatch;
use outpost_tests::api::{login, user, PASSWORD};
use outpost_tests::cluster::Cluster;
use outpost_tests::procs::{Controller, ControllerOpts};
use outpost_tests::world::World;
use outpost_tests::Backend;
use reqwest::{Method, StatusCode};
use serde_json::json;

/// The failures an account is allowed before it is locked (the controller's FREE_FAILURES).
const ALLOWANCE: usize = 5;

/// One login over HTTPS; its status and Retry-After.
async fn attempt(ctl: &Controller, username: &str, password: &str) -> Answer {
    let resp = ctl
        .api()
        .request(Method::POST, "/api/v1/auth/login")
        .json(&json!({"username": username, "password": password}))
        .timeout(Duration::from_secs(120))
        .send()
        .await
        .unwrap_or_else(|e| panic!("login as {username:?}: {e}"));
    answer(&resp)
}

/// Fires one wrong login per name in `names`, all at once, each on its own connection; the
/// statuses. The connections are opened first, so that every login reaches the controller
/// while the first password checks are still running, as a determined attacker's would.
async fn race(ctl: &Controller, names: &[String]) -> Vec<StatusCode> {
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(names.len()));
    let tasks: Vec<_> = names
        .iter()
        .map(|name| {
            let (api, name, barrier) = (ctl.api(), name.clone(), barrier.clone());
            tokio::spawn(async move {
                api.request(Method::GET, "/healthz").send().await?;
                barrier.wait().await;
                api.request(Method::POST, "/api/v1/auth/login")
                    .json(&json!({"username": name, "password": "not the password"}))
                    .timeout(Duration::from_secs(300))
                    .send()
                    .await
                    .map(|r| r.status())
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.expect("task").expect("login request"));
    }
    statuses
}

/// A status and its Retry-After.
type Answer = (StatusCode, Option<u64>);

fn answer(resp: &reqwest::Response) -> Answer {
    let retry = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok()?.parse().ok());
    (resp.status(), retry)
}

/// Keeps making wrong guesses with `guess` until the account is locked for at least `secs`,
/// sleeping out each shorter lock: the cross-checks that follow then cannot outlast the lock
/// on a slow machine. Each time a lock runs out exactly one guess is checked (`wrong`).
async fn lock_for<F, Fut>(secs: u64, wrong: StatusCode, mut guess: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Answer>,
{
    let mut checked_in_a_row = 0;
    for _ in 0..30 {
        let (status, retry) = guess().await;
        if status == wrong {
            checked_in_a_row += 1;
            assert!(checked_in_a_row <= ALLOWANCE, "guesses go on unthrottled");
            continue;
        }
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        let retry = retry.expect("a 429 says when to retry");
        if retry >= secs {
            return;
        }
        tokio::time::sleep(Duration::from_secs(retry)).await;
        let (status, _) = guess().await;
        assert_eq!(status, wrong, "one guess is checked when the lock runs out");
        checked_in_a_row = 1;
    }
    panic!("the account was never locked for {secs} s");
}

/// Every audit row (newest first).
async fn audit(w: &World) -> Vec<outpost_controller::model::AuditEntry> {
    w.store
        .list_audit(&AuditFilter::default(), Paging::new(1000, 0))
        .await
        .expect("audit")
        .items
}

/// The LOGIN_FAILED rows naming `u`.
async fn failures_of(w: &World, u: &User) -> usize {
    audit(w)
        .await
        .iter()
        .filter(|e| e.action == "LOGIN_FAILED" && e.resource_id == Some(u.id.0))
        .count()
}

/// How many of `statuses` got past the throttle (anything but 429), after checking that each
/// is a refusal.
fn checked(statuses: &[StatusCode], what: &str) -> usize {
    for s in statuses {
        assert!(
            *s == StatusCode::UNAUTHORIZED || *s == StatusCode::TOO_MANY_REQUESTS,
            "{what}: {s}"
        );
    }
    statuses
        .iter()
        .filter(|s| **s != StatusCode::TOO_MANY_REQUESTS)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_wrong_logins_reach_bcrypt_no_more_than_the_allowance() {
    let c = Cluster::start(Backend::MariaDb, ControllerOpts::default()).await;
    let w = &c.world;

    // 128 wrong logins for one account at once.
    let vera = user(w, "vera", Role::Viewer).await;
    let started = Instant::now();
    let statuses = race(&c.ctl, &vec!["vera".to_owned(); 128]).await;
    let checked_plain = checked(&statuses, "vera");
    eprintln!(
        "128 racing logins: {checked_plain} checked, {} throttled, in {:?}",
        128 - checked_plain,
        started.elapsed()
    );
    assert!(checked_plain >= 1, "some login must be checked");
    assert!(
        checked_plain <= ALLOWANCE,
        "{checked_plain} of 128 racing logins got past the throttle"
    );
    let audited = failures_of(w, &vera).await;
    assert!(
        (1..=ALLOWANCE).contains(&audited),
        "{audited} LOGIN_FAILED rows for vera"
    );

    // The same account typed five ways: MariaDB's utf8mb4_unicode_ci makes them one name, so
    // they share one counter however each is spelt.
    let maria = user(w, "maria", Role::Viewer).await;
    let variants = ["maria", "MARIA", "Maria ", "mária", "MARÍA"];
    for v in variants {
        assert_eq!(
            w.store.get_user_by_username(v).await.expect(v).id,
            maria.id,
            "{v:?} is maria on MariaDB"
        );
    }
    let names: Vec<String> = (0..128)
        .map(|i| variants[i % variants.len()].to_owned())
        .collect();
    let statuses = race(&c.ctl, &names).await;
    let checked_variants = checked(&statuses, "maria's variants");
    eprintln!("128 racing logins under 5 spellings: {checked_variants} checked");
    assert!(
        checked_variants <= ALLOWANCE,
        "{checked_variants} of 128 racing logins under five spellings got past the throttle"
    );
    let audited = failures_of(w, &maria).await;
    assert!(
        (1..=ALLOWANCE).contains(&audited),
        "{audited} LOGIN_FAILED rows for maria"
    );
    // And one at a time, once the account is locked: every spelling is refused unchecked,
    // the right password too.
    lock_for(8, StatusCode::UNAUTHORIZED, || {
        attempt(&c.ctl, "MÁRIA", "still not it")
    })
    .await;
    for v in variants {
        assert_eq!(
            attempt(&c.ctl, v, PASSWORD).await.0,
            StatusCode::TOO_MANY_REQUESTS,
            "{v:?} while maria is locked, even with the right password"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_current_password_is_throttled_like_a_login() {
    let c = Cluster::start(Backend::Sqlite, ControllerOpts::default()).await;
    let w = &c.world;

    // Through the API: someone holding nina's session guesses her current password.
    let nina = user(w, "nina", Role::Operator).await;
    let session = login(&c.ctl, "nina", PASSWORD).await;
    let path = format!("/api/v1/users/{}/password", nina.id);
    let change = |current: &'static str| {
        let rb = session
            .request(Method::POST, &path)
            .json(&json!({"current_password": current, "new_password": "a-new-pass-2"}));
        async move { answer(&rb.send().await.expect("password change")) }
    };
    for i in 0..ALLOWANCE {
        let (status, _) = change("a wrong guess").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "guess {i}");
    }
    let (status, retry) = change("another guess").await;
    assert_eq!(
        status,
        StatusCode::TOO_MANY_REQUESTS,
        "guess {} is throttled",
        ALLOWANCE + 1
    );
    assert!(retry.is_some(), "with Retry-After");
    // The same counter as a login: while it is locked nina cannot sign in, and the right
    // current password is not even checked.
    lock_for(8, StatusCode::FORBIDDEN, || change("a wrong guess")).await;
    assert_eq!(
        attempt(&c.ctl, "nina", PASSWORD).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(change(PASSWORD).await.0, StatusCode::TOO_MANY_REQUESTS);

    // Through the web UI's account page, with a session cookie and the page's CSRF token.
    user(w, "otto", Role::Operator).await;
    let token = login(&c.ctl, "otto", PASSWORD)
        .await
        .token()
        .expect("token")
        .to_owned();
    let cookie = format!("outpost_session={token}");
    let ui = c.ctl.api();
    let page = ui
        .request(Method::GET, "/account/password")
        .header("cookie", &cookie)
        .send()
        .await
        .expect("password page")
        .text()
        .await
        .expect("page");
    let csrf = page
        .split("name=\"_csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the page's CSRF token")
        .to_owned();
    let post = |current: &'static str| {
        let rb = ui
            .request(Method::POST, "/account/password")
            .header("cookie", &cookie)
            .form(&[
                ("_csrf", csrf.as_str()),
                ("current_password", current),
                ("new_password", "a-new-pass-2"),
            ]);
        async move {
            let resp = rb.send().await.expect("form");
            let a = answer(&resp);
            (a, resp.text().await.expect("page"))
        }
    };
    for i in 0..ALLOWANCE {
        let ((status, _), _) = post("a wrong guess").await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "UI guess {i}");
    }
    let ((status, retry), text) = post("another guess").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(retry.is_some(), "with Retry-After");
    assert!(
        text.contains("too many wrong passwords") && text.contains("try again in"),
        "the page says why: {text}"
    );
    lock_for(8, StatusCode::UNPROCESSABLE_ENTITY, || async {
        post("a wrong guess").await.0
    })
    .await;
    assert_eq!(
        attempt(&c.ctl, "otto", PASSWORD).await.0,
        StatusCode::TOO_MANY_REQUESTS,
        "the UI's guesses count against otto's logins"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_keep_nothing_typed_and_deactivated_accounts_take_as_long() {
    let c = Cluster::start(Backend::Sqlite, ControllerOpts::default()).await;
    let w = &c.world;
    user(w, "vera", Role::Viewer).await;

    // A password typed into the name field, through the API and through the UI's form.
    let secret = "Tr0ub4dor&3-correct-horse";
    assert_eq!(
        attempt(&c.ctl, secret, "vera").await.0,
        StatusCode::UNAUTHORIZED
    );
    let resp = c
        .ctl
        .api()
        .request(Method::POST, "/login")
        .form(&[("username", secret), ("password", "vera"), ("next", "/")])
        .send()
        .await
        .expect("UI login");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    // And a wrong password for a real account typed with it.
    assert_eq!(
        attempt(&c.ctl, "vera", secret).await.0,
        StatusCode::UNAUTHORIZED
    );
    let rows = audit(w).await;
    let failed: Vec<_> = rows.iter().filter(|e| e.action == "LOGIN_FAILED").collect();
    assert_eq!(failed.len(), 3, "{failed:?}");
    for e in &rows {
        let text = serde_json::to_string(e).expect("row");
        assert!(
            !text.to_lowercase().contains(&secret.to_lowercase()),
            "an audit row holds what was typed: {text}"
        );
    }

    // A deactivated account's refusal takes as long as a wrong password's: bcrypt runs for
    // both. Interleaved, so both see the same load; medians of four tries each (an account's
    // fifth failure locks it).
    let quinn = user(w, "quinn", Role::Viewer).await;
    w.store
        .update_user(
            quinn.id,
            &UserPatch {
                is_active: Some(false),
                ..UserPatch::default()
            },
            &Actor::system(),
        )
        .await
        .expect("deactivate");
    let rita = user(w, "rita", Role::Viewer).await;
    let timed = |name: &'static str, password: &'static str| {
        let ctl = &c.ctl;
        async move {
            let t = Instant::now();
            let (status, _) = attempt(ctl, name, password).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{name}");
            t.elapsed()
        }
    };
    // A warm-up, so that neither side pays for the first connection or the dummy hash.
    timed("nobody-here", "x").await;
    let (mut active, mut inactive, mut unknown) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..4 {
        active.push(timed("rita", "a wrong password").await);
        inactive.push(timed("quinn", PASSWORD).await);
        unknown.push(timed("nobody-here", "x").await);
    }
    let median = |mut v: Vec<Duration>| {
        v.sort();
        (v[1] + v[2]) / 2
    };
    let (active, inactive, unknown) = (median(active), median(inactive), median(unknown));
    eprintln!(
        "median refusal: wrong password {active:?}, deactivated {inactive:?}, unknown {unknown:?}"
    );
    assert!(
        inactive * 2 >= active,
        "a deactivated account answers in {inactive:?}, a wrong password in {active:?}"
    );
    assert!(
        unknown * 2 >= active,
        "an unknown name answers in {unknown:?}, a wrong password in {active:?}"
    );
    // The refusals name the accounts, not what was typed, and say why.
    let rows = audit(w).await;
    let reasons = |id: i32| -> Vec<String> {
        rows.iter()
            .filter(|e| e.action == "LOGIN_FAILED" && e.resource_id == Some(id))
            .filter_map(|e| e.details.as_ref()?.0["reason"].as_str().map(str::to_owned))
            .collect()
    };
    assert_eq!(reasons(quinn.id.0), vec!["deactivated"; 4]);
    assert_eq!(reasons(rita.id.0), vec!["wrong_password"; 4]);
}
