//! store::servers — the Ansible targets. Soft-deleted through `is_active`; a server that jobs
//! refer to can only be deactivated.

use std::net::IpAddr;

use serde_json::{json, Value};

use super::audit::{insert_audit, Actor, NewAudit};
use super::{
    json_object_text, now, on_pool, page, retire, InsertedId, Result, Store, StoreError, WritePool,
};
use crate::model::{CredentialId, Page, Paging, Server, ServerId};

const COLUMNS: &str = "id, hostname, ip_address, os_type, os_version, ssh_port, ssh_user, \
     ssh_key_path, tags, environment, description, is_active, host_vars, inventory_groups, \
     ssh_credential_id, become_credential_id, created_at, updated_at";

/// A server to add, or (in [`Store::update_server`]) the full new state of one.
#[derive(Debug, Clone)]
pub struct NewServer {
    pub hostname: String,
    pub ip_address: String,
    pub os_type: String,
    pub os_version: Option<String>,
    pub ssh_port: i32,
    pub ssh_user: String,
    pub ssh_key_path: Option<String>,
    pub tags: Option<Value>,
    pub environment: Option<String>,
    pub description: Option<String>,
    pub host_vars: Option<Value>,
    /// Chains of group names (see [`outpost_api::inventory::check_groups`]); `None` or empty =
    /// no groups.
    pub inventory_groups: Option<Vec<Vec<String>>>,
    /// An `ssh_key` credential (the service checks the kind).
    pub ssh_credential_id: Option<CredentialId>,
    /// A `become_password` credential.
    pub become_credential_id: Option<CredentialId>,
}

impl NewServer {
    /// A server with the seed's defaults: port 22, user root.
    pub fn new(hostname: &str, ip_address: &str, os_type: &str) -> NewServer {
        NewServer {
            hostname: hostname.to_owned(),
            ip_address: ip_address.to_owned(),
            os_type: os_type.to_owned(),
            os_version: None,
            ssh_port: 22,
            ssh_user: "root".to_owned(),
            ssh_key_path: None,
            tags: None,
            environment: None,
            description: None,
            host_vars: None,
            inventory_groups: None,
            ssh_credential_id: None,
            become_credential_id: None,
        }
    }

    fn check(&self) -> Result<()> {
        let len_ok = |s: &str, max: usize| !s.is_empty() && s.chars().count() <= max;
        if !len_ok(&self.hostname, 255) {
            return Err(StoreError::invalid(
                "hostname",
                "must be 1 to 255 characters",
            ));
        }
        if self.ip_address.parse::<IpAddr>().is_err() {
            return Err(StoreError::invalid(
                "ip_address",
                format!("'{}' is not an IPv4 or IPv6 address", self.ip_address),
            ));
        }
        if !len_ok(&self.os_type, 50) {
            return Err(StoreError::invalid(
                "os_type",
                "must be 1 to 50 characters (ubuntu, debian, rhel…)",
            ));
        }
        if !(1..=65535).contains(&self.ssh_port) {
            return Err(StoreError::invalid(
                "ssh_port",
                "must be between 1 and 65535",
            ));
        }
        if !len_ok(&self.ssh_user, 50) {
            return Err(StoreError::invalid(
                "ssh_user",
                "must be 1 to 50 characters",
            ));
        }
        if let Some(path) = &self.ssh_key_path {
            if !path.starts_with('/') || path.chars().count() > 500 {
                return Err(StoreError::invalid(
                    "ssh_key_path",
                    "must be an absolute path of at most 500 characters",
                ));
            }
        }
        if let Some(chains) = &self.inventory_groups {
            outpost_api::inventory::check_groups(chains)
                .map_err(|e| StoreError::invalid("inventory_groups", e.to_string()))?;
        }
        Ok(())
    }
}

/// The column text of a server's group chains: no groups is NULL, so one spelling means none.
fn groups_text(chains: Option<&[Vec<String>]>) -> Result<Option<String>> {
    match chains {
        None | Some([]) => Ok(None),
        Some(c) => serde_json::to_string(c)
            .map(Some)
            .map_err(|e| StoreError::invalid("inventory_groups", e.to_string())),
    }
}

/// Filters for [`Store::list_servers`].
#[derive(Debug, Clone, Default)]
pub struct ServerFilter {
    pub active: Option<bool>,
    pub environment: Option<String>,
    /// Every pair must be among the server's tags (string values).
    pub tags: Vec<(String, String)>,
}

impl ServerFilter {
    fn tags_match(&self, server: &Server) -> bool {
        self.tags.iter().all(|(k, v)| {
            server
                .tags
                .as_ref()
                .and_then(|t| t.0.get(k))
                .is_some_and(|found| crate::model::label_text(found) == *v)
        })
    }
}

impl Store {
    pub async fn create_server(&self, new: &NewServer, actor: &Actor) -> Result<Server> {
        new.check()?;
        let tags = json_object_text("tags", new.tags.as_ref())?;
        let host_vars = json_object_text("host_vars", new.host_vars.as_ref())?;
        let groups = groups_text(new.inventory_groups.as_deref())?;
        let ts = now();
        let id = on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let res = sqlx::query(
                "INSERT INTO servers (hostname, ip_address, os_type, os_version, ssh_port, ssh_user, \
                 ssh_key_path, tags, environment, description, is_active, host_vars, inventory_groups, \
                 ssh_credential_id, become_credential_id, created_at, updated_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&new.hostname).bind(&new.ip_address).bind(&new.os_type).bind(&new.os_version)
            .bind(new.ssh_port).bind(&new.ssh_user).bind(&new.ssh_key_path).bind(&tags)
            .bind(&new.environment).bind(&new.description).bind(true).bind(&host_vars).bind(&groups)
            .bind(new.ssh_credential_id).bind(new.become_credential_id).bind(ts).bind(ts)
            .execute(&mut *tx).await
            .map_err(|e| StoreError::on_write(e, || format!("server '{}'", new.hostname)))?;
            let id = res.inserted_id() as i32;
            insert_audit!(&mut *tx, &NewAudit {
                actor, action: "CREATE", resource_type: "server", resource_id: Some(id),
                details: Some(json!({"hostname": new.hostname, "ip_address": new.ip_address, "environment": new.environment})),
            })?;
            tx.commit().await?;
            id
        });
        self.get_server(ServerId(id)).await
    }

    pub async fn get_server(&self, id: ServerId) -> Result<Server> {
        let sql = format!("SELECT {COLUMNS} FROM servers WHERE id = ?");
        let row = on_pool!(self, p => sqlx::query_as::<_, Server>(&sql).bind(id).fetch_optional(p).await?);
        row.ok_or_else(|| StoreError::NotFound(format!("server {id}")))
    }

    /// The servers of the first `limit` jobs [`Store::unassigned_jobs`] reads, in one
    /// statement the dispatch round runs beside that one rather than after it.
    pub async fn servers_of_unassigned(&self, limit: i64) -> Result<Vec<Server>> {
        // MySQL takes no LIMIT in an IN subquery; it does in a derived table.
        let sql = format!(
            "SELECT {COLUMNS} FROM servers WHERE id IN (SELECT q.server_id FROM (\
             SELECT server_id FROM jobs WHERE {} ORDER BY created_at, id LIMIT ?) q)",
            super::jobs::UNASSIGNED_SQL
        );
        Ok(on_pool!(self, p => sqlx::query_as::<_, Server>(&sql).bind(limit).fetch_all(p).await?))
    }

    pub async fn get_server_by_hostname(&self, hostname: &str) -> Result<Server> {
        let sql = format!("SELECT {COLUMNS} FROM servers WHERE hostname = ?");
        let row = on_pool!(self, p => sqlx::query_as::<_, Server>(&sql).bind(hostname).fetch_optional(p).await?);
        row.ok_or_else(|| StoreError::NotFound(format!("server '{hostname}'")))
    }

    /// Servers ordered by hostname. Tags are matched here rather than in SQL (the dialects'
    /// JSON functions differ, and an inventory is thousands of rows, not millions).
    pub async fn list_servers(&self, f: &ServerFilter, paging: Paging) -> Result<Page<Server>> {
        let env = f.environment.as_deref();
        if f.tags.is_empty() {
            return Ok(
                page!(self, Server, select: COLUMNS, from: "servers", order: "hostname", paging: paging,
                filters: [("is_active", f.active), ("environment", env)]),
            );
        }
        let sql = format!(
            "SELECT {COLUMNS} FROM servers WHERE (? IS NULL OR is_active = ?) \
             AND (? IS NULL OR environment = ?) ORDER BY hostname"
        );
        let all = on_pool!(self, p => sqlx::query_as::<_, Server>(&sql)
            .bind(f.active).bind(f.active).bind(env).bind(env).fetch_all(p).await?);
        let matching: Vec<Server> = all.into_iter().filter(|s| f.tags_match(s)).collect();
        let total = matching.len() as i64;
        let items = matching
            .into_iter()
            .skip(paging.offset as usize)
            .take(paging.limit as usize)
            .collect();
        Ok(Page {
            items,
            total,
            total_exact: true,
            limit: paging.limit,
            offset: paging.offset,
            next: None,
        })
    }

    /// Replaces a server's attributes (not its active flag).
    pub async fn update_server(
        &self,
        id: ServerId,
        new: &NewServer,
        actor: &Actor,
    ) -> Result<Server> {
        new.check()?;
        let tags = json_object_text("tags", new.tags.as_ref())?;
        let host_vars = json_object_text("host_vars", new.host_vars.as_ref())?;
        let groups = groups_text(new.inventory_groups.as_deref())?;
        let old = self.get_server(id).await?;
        on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            sqlx::query(
                "UPDATE servers SET hostname = ?, ip_address = ?, os_type = ?, os_version = ?, ssh_port = ?, \
                 ssh_user = ?, ssh_key_path = ?, tags = ?, environment = ?, description = ?, host_vars = ?, \
                 inventory_groups = ?, ssh_credential_id = ?, become_credential_id = ?, updated_at = ? WHERE id = ?",
            )
            .bind(&new.hostname).bind(&new.ip_address).bind(&new.os_type).bind(&new.os_version)
            .bind(new.ssh_port).bind(&new.ssh_user).bind(&new.ssh_key_path).bind(&tags)
            .bind(&new.environment).bind(&new.description).bind(&host_vars).bind(&groups)
            .bind(new.ssh_credential_id).bind(new.become_credential_id).bind(now()).bind(id)
            .execute(&mut *tx).await
            .map_err(|e| StoreError::on_write(e, || format!("server '{}'", new.hostname)))?;
            insert_audit!(&mut *tx, &NewAudit {
                actor, action: "UPDATE", resource_type: "server", resource_id: Some(id.0),
                details: Some(json!({
                    "old": {"hostname": old.hostname, "ip_address": old.ip_address, "environment": old.environment,
                            "ssh_credential_id": old.ssh_credential_id, "become_credential_id": old.become_credential_id},
                    "new": {"hostname": new.hostname, "ip_address": new.ip_address, "environment": new.environment,
                            "ssh_credential_id": new.ssh_credential_id, "become_credential_id": new.become_credential_id},
                })),
            })?;
            tx.commit().await?;
        });
        self.get_server(id).await
    }

    /// Soft delete (or undo it): jobs keep referring to the row.
    pub async fn set_server_active(
        &self,
        id: ServerId,
        active: bool,
        actor: &Actor,
    ) -> Result<Server> {
        let row = self.get_server(id).await?;
        self.set_row_active(&retire::SERVERS, id.0, &row.hostname, active, actor)
            .await?;
        self.get_server(id).await
    }

    /// Deletes a server no job refers to; one with jobs can only be deactivated.
    pub async fn delete_server(&self, id: ServerId, actor: &Actor) -> Result<()> {
        let row = self.get_server(id).await?;
        self.delete_unreferenced(&retire::SERVERS, id.0, &row.hostname, actor)
            .await
    }
}
