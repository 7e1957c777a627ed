//! Passwords against a real controller process: an admin's reset ends the user's sessions and
//! obliges a change; a wrong current password changes nothing; a change ends every other
//! session of the account and keeps the one that made it; and the web UI's password page, in
//! a real browser, from the forced change after sign-in to the dashboard.

use std::time::Duration;

use outpost_api::client::{ApiError, Client};
use outpost_api::{Page, UserView};
use outpost_controller::model::Role;
use outpost_tests::api::{login, user, PASSWORD};
use outpost_tests::browser::Browser;
use outpost_tests::cluster::Cluster;
use outpost_tests::procs::{Controller, ControllerOpts};
use outpost_tests::{wait_for, Backend};
use reqwest::{Method, StatusCode};
use serde_json::json;

const MINUTE: Duration = Duration::from_secs(60);

/// Status, code and message of a refusal (panics on success or on a transport error).
fn refused(e: ApiError) -> (u16, String, String) {
    match e {
        ApiError::Refused {
            status,
            code,
            message,
            ..
        } => (status, code, message),
        other => panic!("not a refusal: {other}"),
    }
}

/// The status `client` gets for a request that needs a live session and an unexpired password.
async fn servers_status(client: &Client) -> u16 {
    match client.get::<serde_json::Value>("/api/v1/servers").await {
        Ok(_) => 200,
        Err(e) => refused(e).0,
    }
}

/// The status of a login with this password (without panicking on a refusal).
async fn login_status(ctl: &Controller, username: &str, password: &str) -> StatusCode {
    ctl.api()
        .request(Method::POST, "/api/v1/auth/login")
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .expect("login request")
        .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_reset_ends_the_sessions_and_the_owner_must_change_it() {
    let c = Cluster::start(Backend::MariaDb, ControllerOpts::default()).await;
    let w = &c.world;
    let otto = user(w, "otto", Role::Operator).await;
    let admin = login(&c.ctl, "ops", PASSWORD).await;
    let laptop = login(&c.ctl, "otto", PASSWORD).await;
    let phone = login(&c.ctl, "otto", PASSWORD).await;
    assert_eq!(servers_status(&laptop).await, 200);
    let otto_path = format!("/api/v1/users/{}/password", otto.id);

    // An operator cannot set someone else's password.
    let (status, ..) = refused(
        laptop
            .post::<_, UserView>(
                &format!("/api/v1/users/{}/password", w.admin.id),
                &json!({"new_password": "taken over 1"}),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 403, "an operator resetting the admin's password");
    // An admin changing their own password is asked for the current one like anyone.
    let (status, _, message) = refused(
        admin
            .post::<_, UserView>(
                &format!("/api/v1/users/{}/password", w.admin.id),
                &json!({"new_password": "admin without proof 1"}),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 422, "{message}");
    assert!(message.contains("current_password"), "{message}");

    // The reset: no current password is needed, and the owner must change it.
    let reset: UserView = admin
        .post(&otto_path, &json!({"new_password": "reset by admin 1"}))
        .await
        .expect("an admin resets otto's password");
    assert!(reset.must_change_password);
    // Every session otto had ends, and the old password no longer signs in.
    for (name, s) in [("laptop", &laptop), ("phone", &phone)] {
        assert_eq!(servers_status(s).await, 401, "otto's {name} session");
    }
    assert_eq!(
        login_status(&c.ctl, "otto", PASSWORD).await,
        StatusCode::UNAUTHORIZED,
        "the old password after the reset"
    );
    // The admin's own session is untouched.
    assert_eq!(servers_status(&admin).await, 200);

    // With the reset password otto may sign in, but do nothing but change it.
    let desk = login(&c.ctl, "otto", "reset by admin 1").await;
    let tablet = login(&c.ctl, "otto", "reset by admin 1").await;
    let (status, code, message) = refused(
        desk.get::<serde_json::Value>("/api/v1/servers")
            .await
            .unwrap_err(),
    );
    assert_eq!((status, code.as_str()), (403, "password_expired"));
    assert!(message.contains(&otto_path), "{message}");

    // A wrong current password changes nothing and ends nothing.
    let (status, _, message) = refused(
        desk.post::<_, UserView>(
            &otto_path,
            &json!({"current_password": "not the password", "new_password": "otto's own 2"}),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(status, 403, "{message}");
    assert!(message.contains("current_password is wrong"), "{message}");
    // Nor does leaving it out.
    let (status, ..) = refused(
        desk.post::<_, UserView>(&otto_path, &json!({"new_password": "otto's own 2"}))
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 422, "a change without the current password");
    assert_eq!(
        servers_status(&tablet).await,
        403,
        "the other session still lives, still obliged to change"
    );
    assert_eq!(
        login_status(&c.ctl, "otto", "otto's own 2").await,
        StatusCode::UNAUTHORIZED,
        "the refused new password was not set"
    );

    // The change: the session that made it goes on, the other one ends.
    let changed: UserView = desk
        .post(
            &otto_path,
            &json!({"current_password": "reset by admin 1", "new_password": "otto's own 2"}),
        )
        .await
        .expect("otto changes the password");
    assert!(!changed.must_change_password);
    assert_eq!(
        servers_status(&desk).await,
        200,
        "the session that changed it"
    );
    assert_eq!(servers_status(&tablet).await, 401, "otto's other session");
    assert_eq!(
        login_status(&c.ctl, "otto", "reset by admin 1").await,
        StatusCode::UNAUTHORIZED,
        "the reset password after the change"
    );
    let again = login(&c.ctl, "otto", "otto's own 2").await;
    assert_eq!(servers_status(&again).await, 200);
    assert_eq!(servers_status(&admin).await, 200);

    // The audit says who set which password, and holds none of them.
    let audit: Page<outpost_api::AuditView> = admin.get("/api/v1/audit?limit=1000").await.unwrap();
    let changes: Vec<_> = audit
        .items
        .iter()
        .filter(|e| e.action == "PASSWORD")
        .collect();
    assert_eq!(changes.len(), 2, "the reset and the change: {changes:?}");
    let text = serde_json::to_string(&audit.items).unwrap();
    for secret in [
        PASSWORD,
        "reset by admin 1",
        "otto's own 2",
        "not the password",
        "taken over 1",
        "admin without proof 1",
    ] {
        assert!(!text.contains(secret), "the audit holds a password");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_page_in_a_browser() {
    let c = Cluster::start(Backend::Sqlite, ControllerOpts::default()).await;
    let w = &c.world;
    let nina = user(w, "nina", Role::Operator).await;
    let admin = login(&c.ctl, "ops", PASSWORD).await;
    let _: UserView = admin
        .post(
            &format!("/api/v1/users/{}/password", nina.id),
            &json!({"new_password": "reset by admin 1"}),
        )
        .await
        .expect("reset");
    // A session nina holds elsewhere (the CLI, say), which the change must end.
    let elsewhere = login(&c.ctl, "nina", "reset by admin 1").await;

    let b = Browser::start(&c.ctl.api_url(), "password").await;
    b.goto("/login").await;
    b.find("#username").await.send_keys("nina").await.unwrap();
    b.find("#password")
        .await
        .send_keys("reset by admin 1")
        .await
        .unwrap();
    b.find("form button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    // Signing in leads to the password page, which says why.
    wait_for("the password page after sign-in", MINUTE, || async {
        (b.path().await == "/account/password").then_some(())
    })
    .await;
    let notice = b.wait_text("p.notice", MINUTE, |_| true).await;
    assert!(notice.contains("must be changed"), "{notice}");
    b.shot("forced").await;
    // Nothing else opens until it is changed.
    b.goto("/jobs").await;
    wait_for("the redirect back to the password page", MINUTE, || async {
        (b.path().await == "/account/password").then_some(())
    })
    .await;

    // A wrong current password is shown on the page, and changes nothing.
    let fill = |current: &'static str| {
        let b = &b;
        async move {
            b.find("#current").await.send_keys(current).await.unwrap();
            b.find("#new")
                .await
                .send_keys("nina's own 2")
                .await
                .unwrap();
            b.find("form.card button[type=submit]")
                .await
                .click()
                .await
                .unwrap();
        }
    };
    fill("not the password").await;
    let err = b.wait_text("p.error", MINUTE, |t| !t.is_empty()).await;
    // In words for a person, not the API's field name.
    assert_eq!(err.trim(), "The current password is wrong.");
    assert_eq!(b.path().await, "/account/password");
    b.shot("wrong-current").await;
    assert_eq!(
        login_status(&c.ctl, "nina", "nina's own 2").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        servers_status(&elsewhere).await,
        403,
        "the other session lives on, obliged to change"
    );

    // The right one: the dashboard, in the same browser session.
    fill("reset by admin 1").await;
    wait_for("the dashboard after the change", MINUTE, || async {
        (b.path().await == "/").then_some(())
    })
    .await;
    b.wait_text("#n-running", MINUTE, |_| true).await;
    b.shot("changed").await;
    b.goto("/jobs").await;
    wait_for("the jobs page", MINUTE, || async {
        (b.path().await == "/jobs").then_some(())
    })
    .await;
    assert_eq!(
        servers_status(&elsewhere).await,
        401,
        "the change ended nina's other session"
    );
    assert_eq!(
        login_status(&c.ctl, "nina", "reset by admin 1").await,
        StatusCode::UNAUTHORIZED
    );
    let after = login(&c.ctl, "nina", "nina's own 2").await;
    assert_eq!(servers_status(&after).await, 200);
    b.close().await;
}
