//! Inventories as ansible reads them, through the `outpost` CLI against a real controller and
//! agent: `server import` runs `ansible-inventory`, so host ranges, groups of groups and the
//! `group_vars/`/`host_vars/` directories beside the inventory import as ansible reads them (9
//! servers, each with its group chains); a host known by DNS only is resolved for the record and
//! keeps its name for the bastion; a job runs with its server in those groups (`hosts: lb`). A
//! bad group name is refused with 422 by the API and named by the import; an inventory ansible
//! cannot parse shows ansible's messages; without ansible the CLI says it falls back to its own
//! reader.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use outpost_tests::api::{login, PASSWORD};
use outpost_tests::cluster::Cluster;
use outpost_tests::procs::{bin, AgentOpts, ControllerOpts};
use outpost_tests::world::python;
use outpost_tests::{output_within, Backend};
use serde_json::{json, Value};

const MINUTE: Duration = Duration::from_secs(60);

fn outpost_with(config: &Path, args: &[&str], path: Option<&str>) -> Output {
    let mut cmd = Command::new(bin("outpost"));
    cmd.args(args)
        .env("OUTPOST_CONFIG_DIR", config)
        .env("OUTPOST_PASSWORD", PASSWORD)
        .env_remove("OUTPOST_CONTEXT");
    if let Some(p) = path {
        cmd.env("PATH", p);
    }
    output_within(&mut cmd, 2 * MINUTE, &format!("outpost {}", args.join(" ")))
}

fn outpost(config: &Path, args: &[&str]) -> Output {
    outpost_with(config, args, None)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Fails unless the command succeeded; returns its stdout.
fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "failed ({}): {}{}",
        o.status,
        text(&o.stdout),
        text(&o.stderr)
    );
    text(&o.stdout)
}

fn json_of(o: Output) -> Value {
    serde_json::from_str(&ok(o)).expect("JSON")
}

fn write(dir: &Path, path: &str, content: &str) {
    let p = dir.join(path);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

/// 9 hosts as ansible reads them: two ranges, groups of groups, group vars in a file and in a
/// directory, host vars files, hosts in no group, and `localhost` known by name only (this
/// machine, where the job runs).
fn inventory(dir: &Path) -> std::path::PathBuf {
    write(
        dir,
        "inventory/hosts.ini",
        "10.9.0.1\nbastion ansible_host=10.9.0.2\n\n\
         [web]\nweb[01:04]\n\n\
         [db]\ndb[a:b] ansible_host=10.1.1.1 ansible_user=postgres\n\n\
         [lb]\nlocalhost ansible_connection=local\n\n\
         [fra1:children]\nweb\ndb\n\n\
         [prod:children]\nfra1\nlb\n\n\
         [monitoring]\nweb01\n",
    );
    write(
        dir,
        "inventory/group_vars/prod.yml",
        "environment: production\nmotd: managed by outpost\n",
    );
    write(
        dir,
        "inventory/group_vars/web.yml",
        "http_port: 8080\nrole: web\n",
    );
    write(dir, "inventory/group_vars/fra1/main.yml", "dc: fra1\n");
    write(
        dir,
        "inventory/host_vars/web01.yml",
        "ansible_host: 10.1.0.11\nansible_port: 2222\n",
    );
    for (h, ip) in [("web02", 12), ("web03", 13), ("web04", 14)] {
        write(
            dir,
            &format!("inventory/host_vars/{h}.yml"),
            &format!("ansible_host: 10.1.0.{ip}\n"),
        );
    }
    write(
        dir,
        "inventory/host_vars/localhost.yml",
        &format!("ansible_python_interpreter: {}\n", python()),
    );
    dir.join("inventory/hosts.ini")
}

/// PATH without the directories that hold `ansible-inventory`.
fn path_without_ansible() -> String {
    let path = std::env::var("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .filter(|d| !d.join("ansible-inventory").exists())
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_reads_inventories_as_ansible_does_and_jobs_run_in_their_groups() {
    let c = Cluster::start(Backend::Sqlite, ControllerOpts::default()).await;
    let _agent = c.agent("bastion", &[], &AgentOpts::default());
    let home = tempfile::tempdir().unwrap();
    let cfg = home.path();
    ok(outpost(
        cfg,
        &[
            "login",
            &c.ctl.api_url(),
            "-u",
            "ops",
            "--ca-fingerprint",
            &c.ctl.ca_fingerprint(),
        ],
    ));
    let ini = inventory(cfg);
    let ini = ini.to_str().unwrap();

    // The 9 hosts ansible reads, each with its groups and the vars of group_vars/ and host_vars/.
    let dry = ok(outpost(cfg, &["server", "import", ini, "--dry-run"]));
    assert_eq!(dry.matches("would add").count(), 9, "{dry}");
    ok(outpost(cfg, &["server", "import", ini]));
    let listed = json_of(outpost(cfg, &["server", "list", "--json"]));
    let names: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["hostname"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "10.9.0.1",
            "bastion",
            "dba",
            "dbb",
            "localhost",
            "web01",
            "web02",
            "web03",
            "web04"
        ]
    );
    let web01 = json_of(outpost(cfg, &["server", "show", "web01", "--json"]));
    assert_eq!(
        web01["inventory_groups"],
        json!([["monitoring"], ["prod", "fra1", "web"]])
    );
    assert_eq!(
        (&web01["ip_address"], &web01["ssh_port"]),
        (&json!("10.1.0.11"), &json!(2222))
    );
    assert_eq!(web01["environment"], "production");
    assert_eq!(web01["tags"]["dc"], "fra1");
    assert_eq!(web01["host_vars"]["http_port"], 8080);
    let dbb = json_of(outpost(cfg, &["server", "show", "dbb", "--json"]));
    assert_eq!(dbb["inventory_groups"], json!([["prod", "fra1", "db"]]));
    assert_eq!(dbb["ssh_user"], "postgres");
    let lone = json_of(outpost(cfg, &["server", "show", "10.9.0.1", "--json"]));
    assert_eq!(lone["inventory_groups"], json!([]));
    // Known by name only: the address resolved here, the name kept for the bastion's DNS.
    let local = json_of(outpost(cfg, &["server", "show", "localhost", "--json"]));
    assert_eq!(local["ip_address"], "127.0.0.1");
    assert_eq!(local["host_vars"]["ansible_host"], "localhost");
    assert_eq!(local["inventory_groups"], json!([["prod", "lb"]]));

    // A second import updates the same 9 (by hostname), groups moved with the inventory.
    write(cfg, "inventory/hosts.ini", &{
        let t = std::fs::read_to_string(ini).unwrap();
        t.replace("[monitoring]\nweb01\n", "[monitoring]\nweb02\n")
    });
    let again = ok(outpost(cfg, &["server", "import", ini]));
    assert_eq!(again.matches("updated").count(), 9, "{again}");
    let web01 = json_of(outpost(cfg, &["server", "show", "web01", "--json"]));
    assert_eq!(web01["inventory_groups"], json!([["prod", "fra1", "web"]]));

    // The job's inventory nests the server in its groups: a play for `hosts: lb` runs on it.
    let pb = cfg.join("groups.yml");
    std::fs::write(
        &pb,
        "- hosts: lb\n  gather_facts: false\n  tasks:\n    - ansible.builtin.debug:\n        msg: \"in {{ group_names | join(',') }}: {{ motd }}\"\n",
    )
    .unwrap();
    ok(outpost(cfg, &["playbook", "add", pb.to_str().unwrap()]));
    let run = ok(outpost(
        cfg,
        &["job", "run", "groups", "--server", "localhost", "--follow"],
    ));
    assert!(
        run.contains("\"msg\": \"in lb,prod: managed by outpost\""),
        "{run}"
    );

    // A bad group name: 422 from the API, naming it; the import names the host and the group.
    let api = login(&c.ctl, "ops", PASSWORD).await;
    let err = api
        .post::<_, Value>(
            "/api/v1/servers",
            &json!({"hostname": "x1", "ip_address": "10.0.0.1", "os_type": "linux",
                    "inventory_groups": [["prod", "web-servers"]]}),
        )
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(422), "{err}");
    assert!(err.to_string().contains("'web-servers'"), "{err}");
    let id = local["id"].as_i64().unwrap();
    let err = api
        .patch::<_, Value>(
            &format!("/api/v1/servers/{id}"),
            &json!({ "inventory_groups": vec![vec!["g"]; 65] }),
        )
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(422), "{err}");
    write(
        cfg,
        "bad/hosts.ini",
        "[web-servers]\nweb9 ansible_host=10.0.0.9\n",
    );
    let bad = outpost(
        cfg,
        &[
            "server",
            "import",
            cfg.join("bad/hosts.ini").to_str().unwrap(),
        ],
    );
    assert_eq!(bad.status.code(), Some(3));
    let said = text(&bad.stderr);
    assert!(
        said.contains("web9: group name 'web-servers' is not valid"),
        "{said}"
    );

    // An inventory ansible cannot parse: its own messages are shown, and nothing changes.
    write(cfg, "broken/hosts.yml", "all:\n  hosts: [\n");
    let broken = outpost(
        cfg,
        &[
            "server",
            "import",
            cfg.join("broken/hosts.yml").to_str().unwrap(),
        ],
    );
    assert_eq!(broken.status.code(), Some(3));
    let said = text(&broken.stderr);
    assert!(said.contains("its messages are above"), "{said}");
    assert!(said.lines().count() > 1, "ansible's messages: {said}");
    let listed = json_of(outpost(cfg, &["server", "list", "--json"]));
    assert_eq!(listed["total"], 9);

    // Without ansible: Outpost's own reader, saying so (the ranges file is beyond it).
    let no_ansible = path_without_ansible();
    let fallback = outpost_with(cfg, &["server", "import", ini], Some(&no_ansible));
    let said = text(&fallback.stderr);
    assert!(
        said.contains("ansible-inventory not found; reading")
            && said.contains(
                "ranges, group_vars/ and host_vars/ directories and plugins are not supported"
            ),
        "{said}"
    );
    assert!(said.contains("host ranges such as web[01:04]"), "{said}");
    write(
        cfg,
        "simple/hosts.ini",
        "[app]\napp1 ansible_host=10.3.0.1\n\n[nyc1:children]\napp\n",
    );
    let simple = outpost_with(
        cfg,
        &[
            "server",
            "import",
            cfg.join("simple/hosts.ini").to_str().unwrap(),
        ],
        Some(&no_ansible),
    );
    ok(simple);
    let app1 = json_of(outpost(cfg, &["server", "show", "app1", "--json"]));
    assert_eq!(app1["inventory_groups"], json!([["nyc1", "app"]]));
}
