//! The long lists (jobs, audit) paged by cursor against a real controller on MariaDB: every
//! item exactly once and in order while new ones arrive between pages, a malformed cursor
//! refused with 422 naming `after`, `offset` still answering for old clients, the total bounded
//! (`total_exact` false) past 10,000 matches, and the UI's "Older" link following `next`.
//! A job's log pages say where the log ends (`last_line`, `complete`) at every edge.

use outpost_api::client::Client;
use outpost_api::{AuditView, JobView, LogPage, LoginResponse, Page};
use outpost_controller::store::audit::{Actor, NewAudit};
use outpost_controller::store::listing::COUNT_BOUND;
use outpost_tests::api::PASSWORD;
use outpost_tests::cluster::Cluster;
use outpost_tests::procs::ControllerOpts;
use outpost_tests::Backend;
use reqwest::{Method, StatusCode};

/// Signs in as the world's admin: the API client and the raw token (the UI's session cookie).
async fn admin(c: &Cluster) -> (Client, String) {
    let resp: LoginResponse = c
        .ctl
        .api()
        .post(
            "/api/v1/auth/login",
            &serde_json::json!({"username": "ops", "password": PASSWORD}),
        )
        .await
        .expect("login");
    (c.ctl.api().with_token(resp.token.clone()), resp.token)
}

/// Reads every page of `path` (which has a `?`) with `limit`, calling `between` after each
/// page; returns the pages.
async fn all_pages<T: serde::de::DeserializeOwned>(
    api: &Client,
    path: &str,
    limit: usize,
    mut between: impl AsyncFnMut(),
) -> Vec<Page<T>> {
    let mut pages = Vec::new();
    let mut url = format!("{path}&limit={limit}");
    loop {
        let page: Page<T> = api.get(&url).await.unwrap_or_else(|e| panic!("{url}: {e}"));
        assert!(page.items.len() <= limit);
        let next = page.next.clone();
        pages.push(page);
        between().await;
        match next {
            Some(n) => url = format!("{path}&limit={limit}&after={n}"),
            None => return pages,
        }
        assert!(pages.len() < 100, "paging does not end");
    }
}

/// A refused request's status and body.
async fn refused(api: &Client, path: &str) -> (StatusCode, serde_json::Value) {
    let resp = api.request(Method::GET, path).send().await.unwrap();
    (resp.status(), resp.json().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_page_by_cursor_once_each_in_order_while_jobs_arrive() {
    let c = Cluster::start(Backend::MariaDb, ControllerOpts::default()).await;
    let w = &c.world;
    let (api, token) = admin(&c).await;
    let pb = w.playbook("paged", "- hosts: all\n  tasks: []\n").await;
    let web = w
        .local_server("web-paged", serde_json::json!({}), "prod")
        .await;
    // Launched in a burst, so that many share a second and the id must order them.
    for _ in 0..23 {
        w.launch(&pb, &web).await;
    }
    let all: Page<JobView> = api.get("/api/v1/jobs?limit=1000").await.unwrap();
    assert_eq!((all.total, all.total_exact, all.next), (23, true, None));
    let expected: Vec<String> = all.items.iter().map(|j| j.id.clone()).collect();
    for pair in all.items.windows(2) {
        assert!(pair[0].created_at >= pair[1].created_at, "newest first");
    }
    // Names come with the rows.
    assert!(all
        .items
        .iter()
        .all(|j| j.playbook.name == "paged" && j.server.name == "web-paged"));

    // Old clients: offset still pages, and agrees with the cursor's pages.
    let by_offset: Page<JobView> = api.get("/api/v1/jobs?limit=5&offset=5").await.unwrap();
    let ids: Vec<&str> = by_offset.items.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(
        ids,
        expected[5..10]
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
    );

    // Two new jobs between every two pages: they are newer, so they never show up in the
    // pages after the first and shift nothing.
    let mut launched = 0;
    let pages: Vec<Page<JobView>> = all_pages(&api, "/api/v1/jobs?", 5, async || {
        w.launch(&pb, &web).await;
        w.launch(&pb, &web).await;
        launched += 2;
    })
    .await;
    let seen: Vec<String> = pages
        .iter()
        .flat_map(|p| p.items.iter().map(|j| j.id.clone()))
        .collect();
    assert_eq!(seen, expected, "every job once, in order");
    assert_eq!(pages.len(), 5, "23 jobs in pages of 5");
    assert!(pages[..4].iter().all(|p| p.next.is_some() && p.offset == 0));
    assert_eq!(launched, 10);
    let head: Page<JobView> = api.get("/api/v1/jobs?limit=1").await.unwrap();
    assert_eq!((head.total, head.total_exact), (33, true));
    assert!(
        !expected.contains(&head.items[0].id),
        "the newest is a new one"
    );

    // Filters hold across pages.
    let first: Page<JobView> = api
        .get("/api/v1/jobs?status=pending&limit=3")
        .await
        .unwrap();
    let next = first.next.clone().expect("a next page");
    let second: Page<JobView> = api
        .get(&format!("/api/v1/jobs?status=pending&limit=3&after={next}"))
        .await
        .unwrap();
    assert_eq!(second.items.len(), 3);
    assert!(second.items[0].created_at <= first.items[2].created_at);
    assert_ne!(second.items[0].id, first.items[2].id);

    // A malformed cursor, or one with an offset, is refused naming the field.
    for path in [
        "/api/v1/jobs?after=not-a-cursor".to_owned(),
        "/api/v1/jobs?after=".to_owned(),
        format!("/api/v1/jobs?after={next}&offset=3"),
        "/api/v1/audit?after=%25%25".to_owned(),
    ] {
        let (status, body) = refused(&api, &path).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{path}: {body}");
        assert_eq!(body["fields"][0]["field"], "after", "{path}: {body}");
    }

    // Past the bound the total stops counting and says so; a narrow filter stays exact.
    let user = w.admin.id.0;
    c.db.exec(&format!(
        "INSERT INTO jobs (job_id, playbook_id, server_id, user_id, status, created_at) \
         SELECT UUID(), {}, {}, {user}, 'success', UTC_TIMESTAMP() - INTERVAL (3600 + seq) SECOND \
         FROM seq_1_to_{}",
        pb.id.0,
        web.id.0,
        COUNT_BOUND + 5
    ))
    .await;
    let big: Page<JobView> = api.get("/api/v1/jobs?limit=2").await.unwrap();
    assert_eq!((big.total, big.total_exact), (COUNT_BOUND, false));
    let pending: Page<JobView> = api
        .get("/api/v1/jobs?status=pending&limit=2")
        .await
        .unwrap();
    assert_eq!((pending.total, pending.total_exact), (33, true));
    // The cursor reaches deep into them: the page after the 10,000th is still served.
    let mut after = big.next.clone().unwrap();
    for _ in 0..3 {
        let p: Page<JobView> = api
            .get(&format!("/api/v1/jobs?limit=1000&after={after}"))
            .await
            .unwrap();
        assert_eq!(p.items.len(), 1000);
        after = p.next.unwrap();
    }

    // The UI's job list links to the older page by cursor, and that link answers.
    let ui = |path: String| {
        c.ctl
            .api()
            .request(Method::GET, &path)
            .header("cookie", format!("outpost_session={token}"))
            .send()
    };
    let html = ui("/jobs".into()).await.unwrap().text().await.unwrap();
    let link = html
        .split("href=\"")
        .filter_map(|s| s.split('"').next())
        .find(|h| h.contains("after="))
        .unwrap_or_else(|| panic!("no Older link on /jobs: {html}"))
        .replace("&amp;", "&");
    assert!(html.contains("more than 10000"), "{html}");
    let older = ui(link.clone()).await.unwrap();
    assert_eq!(older.status(), StatusCode::OK, "{link}");
    let older = older.text().await.unwrap();
    assert!(older.contains("Newest"), "{older}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_pages_by_cursor_once_each_while_records_arrive() {
    let c = Cluster::start(Backend::MariaDb, ControllerOpts::default()).await;
    let w = &c.world;
    let (api, token) = admin(&c).await;
    let system = Actor::system();
    let record = |n: i32| NewAudit {
        actor: &system,
        action: "PAGE",
        resource_type: "pagetest",
        resource_id: Some(n),
        details: None,
    };
    for n in 0..17 {
        w.store.record_audit(&record(n)).await.unwrap();
    }
    let path = "/api/v1/audit?resource_type=pagetest";
    let all: Page<AuditView> = api.get(&format!("{path}&limit=1000")).await.unwrap();
    assert_eq!((all.total, all.total_exact), (17, true));
    let expected: Vec<i64> = all.items.iter().map(|a| a.id).collect();
    assert!(expected.windows(2).all(|p| p[0] > p[1]), "{expected:?}");
    let mut n = 100;
    let pages: Vec<Page<AuditView>> = all_pages(&api, path, 4, async || {
        w.store.record_audit(&record(n)).await.unwrap();
        n += 1;
    })
    .await;
    let seen: Vec<i64> = pages
        .iter()
        .flat_map(|p| p.items.iter().map(|a| a.id))
        .collect();
    assert_eq!(seen, expected, "every record once, in order");

    // The whole trail, unfiltered, pages the same way: everything there before the paging
    // began is seen once (what is recorded meanwhile can only add to the head).
    let whole: Page<AuditView> = api.get("/api/v1/audit?limit=1000").await.unwrap();
    let pages: Vec<Page<AuditView>> = all_pages(&api, "/api/v1/audit?", 7, async || {}).await;
    let seen: Vec<i64> = pages
        .iter()
        .flat_map(|p| p.items.iter().map(|a| a.id))
        .collect();
    assert!(seen.windows(2).all(|p| p[0] > p[1]), "{seen:?}");
    assert!(whole.items.iter().all(|a| seen.contains(&a.id)));

    c.db.exec(&format!(
        "INSERT INTO audit_logs (action, resource_type, resource_id, timestamp) \
         SELECT 'BULK', 'pagetest', seq, UTC_TIMESTAMP() - INTERVAL (3600 + seq) SECOND \
         FROM seq_1_to_{}",
        COUNT_BOUND + 1
    ))
    .await;
    let big: Page<AuditView> = api.get(&format!("{path}&limit=1")).await.unwrap();
    assert_eq!((big.total, big.total_exact), (COUNT_BOUND, false));
    let small: Page<AuditView> = api
        .get("/api/v1/audit?resource_type=pagetest&action=PAGE&limit=1")
        .await
        .unwrap();
    assert_eq!((small.total, small.total_exact), (17 + 5, true));

    // The UI's audit page links to the older page by cursor.
    let html = c
        .ctl
        .api()
        .request(Method::GET, "/audit?resource_type=pagetest")
        .header("cookie", format!("outpost_session={token}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("after="), "no Older link on /audit: {html}");
    assert!(html.contains("more than 10000"), "{html}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_pages_say_where_the_log_ends() {
    use outpost_controller::store::logs::NewLogLine;
    let c = Cluster::start(Backend::MariaDb, ControllerOpts::default()).await;
    let w = &c.world;
    let (api, _) = admin(&c).await;
    let pb = w.playbook("paged-log", "- hosts: all\n  tasks: []\n").await;
    let web = w
        .local_server("web-log", serde_json::json!({}), "prod")
        .await;
    let job = w.launch(&pb, &web).await;
    // 30 lines, every fifth an error.
    let lines: Vec<NewLogLine> = (1..=30)
        .map(|n| NewLogLine {
            job: job.id,
            line_number: n,
            content: format!("line {n}"),
            level: Some(if n % 5 == 0 { "ERROR" } else { "INFO" }.into()),
            timestamp: chrono::Utc::now(),
        })
        .collect();
    w.store.insert_log_lines(&lines).await.unwrap();
    let page = |q: &str| {
        let path = format!("/api/v1/jobs/{}/logs?{q}", job.job_id);
        let api = api.clone();
        async move {
            let p: LogPage = api
                .get(&path)
                .await
                .unwrap_or_else(|e| panic!("{path}: {e}"));
            let numbers: Vec<i32> = p.lines.iter().map(|l| l.line_number).collect();
            (numbers.len(), p.next_after, p.last_line, p.complete)
        }
    };
    // Still running: never complete, wherever the page ends.
    assert_eq!(page("limit=30").await, (30, 30, 30, false));
    assert_eq!(page("limit=10").await, (10, 10, 30, false));
    c.db.exec(&format!(
        "UPDATE jobs SET status = 'success', started_at = NOW(), completed_at = NOW() WHERE id = {}",
        job.id.0
    ))
    .await;
    // A page that ends exactly at the last line is the end; one line short is not.
    assert_eq!(page("limit=30").await, (30, 30, 30, true));
    assert_eq!(page("limit=29").await, (29, 29, 30, false));
    assert_eq!(page("after=29&limit=1").await, (1, 30, 30, true));
    assert_eq!(page("after=10&limit=100").await, (20, 30, 30, true));
    // Past the end: no lines, the end still known.
    assert_eq!(page("after=30").await, (0, 30, 30, true));
    assert_eq!(page("after=99").await, (0, 99, 30, true));
    // Filtered pages end at their last match, the log at its last line.
    assert_eq!(page("level=ERROR&limit=6").await, (6, 30, 30, true));
    assert_eq!(page("level=ERROR&limit=5").await, (5, 25, 30, false));
    // "line 2" is in lines 2 and 20 to 29.
    assert_eq!(page("q=line%202&limit=100").await, (11, 29, 30, true));
    // A job without lines.
    let empty = w.launch(&pb, &web).await;
    let p: LogPage = api
        .get(&format!("/api/v1/jobs/{}/logs", empty.job_id))
        .await
        .unwrap();
    assert_eq!(
        (p.lines.len(), p.next_after, p.last_line, p.complete),
        (0, 0, 0, false)
    );
}
