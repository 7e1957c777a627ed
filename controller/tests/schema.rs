//! Holds the MySQL schema that the migrations build against the seed — the schema document
//! the project was given, kept verbatim as `tests/contract/seed_schema.md` — read at test time: every column's type, nullability and
//! default, every index with its columns, every foreign key with its ON DELETE rule, the
//! engine and collation. The one change DESIGN.md allows — `(job_id, line_number)` made
//! UNIQUE — is the only difference tolerated.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use outpost_controller::{PoolConfig, Store};
use outpost_tests::TestDb;
use sqlx::{Connection, Row};

#[derive(Debug)]
struct SeedColumn {
    name: String,
    sql_type: String,
    nullable: bool,
    default: Option<String>,
    on_update: bool,
}

/// (parent table, child table, column, ON DELETE rule), as the seed's foreign-key table has it.
type SeedForeignKey = (String, String, String, String);

#[derive(Debug, Default)]
struct SeedTable {
    columns: Vec<SeedColumn>,
    /// (columns, unique); the primary key is checked through the columns.
    indexes: Vec<(Vec<String>, bool)>,
}

/// The schema contract: a verbatim copy of the seed document, kept in the repository so that
/// any clone can check itself against it.
fn seed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/contract/seed_schema.md")
}

fn cells(line: &str) -> Vec<String> {
    line.trim()
        .trim_matches('|')
        .split('|')
        .map(|c| c.trim().to_owned())
        .collect()
}

/// Reads the seed's table definitions, index lists and foreign-key table.
fn parse_seed(text: &str) -> (BTreeMap<String, SeedTable>, Vec<SeedForeignKey>) {
    let mut tables: BTreeMap<String, SeedTable> = BTreeMap::new();
    let mut fks = Vec::new();
    let mut current: Option<String> = None;
    let mut in_indexes = false;
    let mut in_fk_table = false;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with("### ") && t.ends_with(" Table") {
            let name = t
                .trim_end_matches(" Table")
                .rsplit(' ')
                .next()
                .unwrap()
                .to_owned();
            tables.entry(name.clone()).or_default();
            current = Some(name);
            in_indexes = false;
            continue;
        }
        if t.starts_with("## ") || t.starts_with("### ") {
            in_fk_table = t.contains("ON DELETE Behaviors");
            if !t.starts_with("### ") || !in_fk_table {
                current = if t.starts_with("### ") { None } else { current };
            }
            if t.starts_with("## ") {
                current = None;
            }
            in_indexes = false;
            continue;
        }
        if t == "**Indexes:**" {
            in_indexes = true;
            continue;
        }
        if t.starts_with("**") {
            in_indexes = false;
        }
        if in_fk_table && t.starts_with('|') && !t.contains("---") && !t.contains("Parent Table") {
            let c = cells(t);
            fks.push((c[0].clone(), c[1].clone(), c[2].clone(), c[3].clone()));
            continue;
        }
        let Some(table) = current.as_ref().and_then(|n| tables.get_mut(n)) else {
            continue;
        };
        if in_indexes && t.starts_with("- ") {
            let item = &t[2..];
            let cols: Vec<String> = item[item.find('(').unwrap() + 1..item.find(')').unwrap()]
                .split(',')
                .map(|c| c.trim().to_owned())
                .collect();
            if item.starts_with("PRIMARY KEY") {
                continue;
            }
            table.indexes.push((cols, item.starts_with("UNIQUE")));
            continue;
        }
        if t.starts_with('|') && !t.contains("---") && !t.starts_with("| Column") {
            let c = cells(t);
            if c.len() < 5 {
                continue;
            }
            let constraints = c[2].as_str();
            let default = constraints
                .split(", ")
                .find_map(|part| part.strip_prefix("DEFAULT "))
                .map(|d| d.to_owned());
            table.columns.push(SeedColumn {
                name: c[0].clone(),
                sql_type: c[1].clone(),
                nullable: !(constraints.contains("NOT NULL")
                    || constraints.contains("PRIMARY KEY")),
                default,
                on_update: constraints.contains("ON UPDATE"),
            });
        }
    }
    (tables, fks)
}

/// The seed's type as MariaDB reports it in information_schema.COLUMNS.COLUMN_TYPE.
fn expected_type(seed: &str) -> String {
    match seed {
        "INT" => "int(11)".into(),
        "BIGINT" => "bigint(20)".into(),
        "BOOLEAN" => "tinyint(1)".into(),
        "JSON" => "longtext".into(), // MariaDB's JSON is an alias of LONGTEXT with a json_valid CHECK
        other => other.to_lowercase().replace(", ", ","),
    }
}

fn expected_default(seed: &Option<String>) -> Option<String> {
    seed.as_ref().map(|d| match d.as_str() {
        "UTC" => "current_timestamp()".into(),
        "TRUE" => "1".into(),
        "FALSE" => "0".into(),
        other => other.trim_matches('\'').to_owned(),
    })
}

#[tokio::test]
async fn mysql_schema_matches_the_seed() {
    let text = std::fs::read_to_string(seed_path()).expect("read seed");
    let (tables, fks) = parse_seed(&text);
    assert_eq!(
        tables.keys().map(String::as_str).collect::<Vec<_>>(),
        vec![
            "audit_logs",
            "job_logs",
            "jobs",
            "playbooks",
            "servers",
            "tickets",
            "users"
        ],
        "the seed parser must find all seven tables"
    );
    assert_eq!(fks.len(), 7, "seven foreign keys in the seed: {fks:?}");

    let db = TestDb::mariadb().await;
    let store = Store::connect(&db.url, &PoolConfig::default())
        .await
        .unwrap();
    store.migrate_up().await.unwrap();
    store.close().await;
    let schema = db.mysql_name().unwrap().to_owned();
    let mut conn = sqlx::MySqlConnection::connect(&db.url).await.unwrap();

    for (table, seed) in &tables {
        // Engine and collation.
        let row = sqlx::query("SELECT ENGINE, TABLE_COLLATION FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?")
            .bind(&schema).bind(table).fetch_one(&mut conn).await
            .unwrap_or_else(|e| panic!("table {table} missing: {e}"));
        assert_eq!(row.get::<String, _>(0), "InnoDB", "{table} engine");
        assert_eq!(
            row.get::<String, _>(1),
            "utf8mb4_unicode_ci",
            "{table} collation"
        );

        // Columns: every seed column, in the seed's order, with type, nullability, default.
        let rows = sqlx::query(
            "SELECT COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, COLUMN_DEFAULT, EXTRA FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
        )
        .bind(&schema).bind(table).fetch_all(&mut conn).await.unwrap();
        let actual: Vec<(String, String, String, Option<String>, String)> = rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
            .collect();
        let seed_names: Vec<&str> = seed.columns.iter().map(|c| c.name.as_str()).collect();
        let actual_seed_order: Vec<&str> = actual
            .iter()
            .map(|a| a.0.as_str())
            .filter(|n| seed_names.contains(n))
            .collect();
        assert_eq!(
            actual_seed_order, seed_names,
            "{table}: the seed's columns, in order"
        );
        for col in &seed.columns {
            let (_, ty, nullable, default, extra) =
                actual.iter().find(|a| a.0 == col.name).unwrap();
            let what = format!("{table}.{}", col.name);
            assert_eq!(ty, &expected_type(&col.sql_type), "{what} type");
            assert_eq!(nullable == "YES", col.nullable, "{what} nullability");
            let default = default
                .as_deref()
                .filter(|d| *d != "NULL")
                .map(|d| d.trim_matches('\'').to_owned());
            assert_eq!(default, expected_default(&col.default), "{what} default");
            assert_eq!(
                extra.contains("on update current_timestamp()"),
                col.on_update,
                "{what} ON UPDATE ({extra})"
            );
            if col.name == "id" {
                assert!(extra.contains("auto_increment"), "{what} AUTO_INCREMENT");
            }
        }
        // Extensions only ever add columns after the seed's.
        let first_extra = actual
            .iter()
            .position(|a| !seed_names.contains(&a.0.as_str()));
        if let Some(pos) = first_extra {
            assert!(
                pos >= seed_names.len(),
                "{table}: extension columns come after the seed's"
            );
        }

        // Indexes: each of the seed's, with the same columns in order and its uniqueness.
        let idx_rows = sqlx::query(
            "SELECT INDEX_NAME, NON_UNIQUE, GROUP_CONCAT(COLUMN_NAME ORDER BY SEQ_IN_INDEX) \
             FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? GROUP BY INDEX_NAME, NON_UNIQUE",
        )
        .bind(&schema).bind(table).fetch_all(&mut conn).await.unwrap();
        let indexes: BTreeSet<(String, bool)> = idx_rows
            .iter()
            .map(|r| (r.get::<String, _>(2), r.get::<i64, _>(1) == 0))
            .collect();
        assert!(
            indexes.contains(&("id".into(), true)),
            "{table} primary key"
        );
        for (cols, unique) in &seed.indexes {
            let key = cols.join(",");
            let allowed_unique = *table == "job_logs" && key == "job_id,line_number";
            let found = indexes.contains(&(key.clone(), *unique))
                || (allowed_unique && indexes.contains(&(key.clone(), true)));
            assert!(
                found,
                "{table}: index ({key}) unique={unique} missing; have {indexes:?}"
            );
        }
    }

    // Foreign keys with their ON DELETE rules.
    let fk_rows = sqlx::query(
        "SELECT k.REFERENCED_TABLE_NAME, k.TABLE_NAME, k.COLUMN_NAME, r.DELETE_RULE \
         FROM information_schema.KEY_COLUMN_USAGE k JOIN information_schema.REFERENTIAL_CONSTRAINTS r \
           ON r.CONSTRAINT_SCHEMA = k.CONSTRAINT_SCHEMA AND r.CONSTRAINT_NAME = k.CONSTRAINT_NAME \
         WHERE k.TABLE_SCHEMA = ? AND k.REFERENCED_TABLE_NAME IS NOT NULL",
    )
    .bind(&schema).fetch_all(&mut conn).await.unwrap();
    let actual_fks: BTreeSet<SeedForeignKey> = fk_rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    for fk in &fks {
        assert!(
            actual_fks.contains(fk),
            "foreign key {fk:?} missing; have {actual_fks:?}"
        );
    }
    let _ = conn.close().await;
}

#[test]
fn seed_parser_reads_the_details() {
    let (tables, fks) = parse_seed(&std::fs::read_to_string(seed_path()).unwrap());
    let users = &tables["users"];
    let role = users.columns.iter().find(|c| c.name == "role").unwrap();
    assert_eq!(role.sql_type, "ENUM('admin','operator','viewer')");
    assert_eq!(role.default.as_deref(), Some("'viewer'"));
    assert!(!role.nullable);
    let updated = users
        .columns
        .iter()
        .find(|c| c.name == "updated_at")
        .unwrap();
    assert!(updated.on_update);
    assert!(tables["jobs"]
        .indexes
        .contains(&(vec!["status".into(), "created_at".into()], false)));
    assert!(fks.contains(&(
        "jobs".into(),
        "job_logs".into(),
        "job_id".into(),
        "CASCADE".into()
    )));
    assert!(fks.contains(&(
        "users".into(),
        "audit_logs".into(),
        "user_id".into(),
        "SET NULL".into()
    )));
}
