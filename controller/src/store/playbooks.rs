//! store::playbooks — playbook metadata: where the YAML lives and its SHA-256. Soft-deleted
//! through `is_active`.

use serde_json::{json, Value};

use super::audit::{insert_audit, Actor, NewAudit};
use super::{
    json_object_text, now, on_pool, page, retire, InsertedId, Result, Store, StoreError, WritePool,
};
use crate::model::{Page, Paging, Playbook, PlaybookId};

pub(crate) const COLUMNS: &str = "id, name, description, file_path, file_hash, tags, variables, \
     is_active, created_at, updated_at, project_id";

#[derive(Debug, Clone)]
pub struct NewPlaybook {
    pub name: String,
    pub description: Option<String>,
    pub file_path: String,
    /// Lower-case hex SHA-256 of the file's content.
    pub file_hash: String,
    pub tags: Option<Value>,
    pub variables: Option<Value>,
}

impl NewPlaybook {
    fn check(&self) -> Result<()> {
        if self.name.is_empty() || self.name.chars().count() > 255 {
            return Err(StoreError::invalid("name", "must be 1 to 255 characters"));
        }
        // Absolute for a row made before projects; relative to the project's root since.
        if self.file_path.is_empty() || self.file_path.chars().count() > 500 {
            return Err(StoreError::invalid(
                "file_path",
                "must be a path of 1 to 500 characters",
            ));
        }
        if self.file_hash.len() != 64
            || !self
                .file_hash
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(StoreError::invalid(
                "file_hash",
                "must be 64 lower-case hex digits (SHA-256)",
            ));
        }
        Ok(())
    }
}

impl Store {
    pub async fn create_playbook(&self, new: &NewPlaybook, actor: &Actor) -> Result<Playbook> {
        new.check()?;
        let tags = json_object_text("tags", new.tags.as_ref())?;
        let vars = json_object_text("variables", new.variables.as_ref())?;
        let ts = now();
        let id = on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let res = sqlx::query(
                "INSERT INTO playbooks (name, description, file_path, file_hash, tags, variables, is_active, created_at, updated_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&new.name).bind(&new.description).bind(&new.file_path).bind(&new.file_hash)
            .bind(&tags).bind(&vars).bind(true).bind(ts).bind(ts)
            .execute(&mut *tx).await
            .map_err(|e| StoreError::on_write(e, || format!("playbook '{}'", new.name)))?;
            let id = res.inserted_id() as i32;
            insert_audit!(&mut *tx, &NewAudit {
                actor, action: "CREATE", resource_type: "playbook", resource_id: Some(id),
                details: Some(json!({"name": new.name, "file_hash": new.file_hash})),
            })?;
            tx.commit().await?;
            id
        });
        self.get_playbook(PlaybookId(id)).await
    }

    pub async fn get_playbook(&self, id: PlaybookId) -> Result<Playbook> {
        let sql = format!("SELECT {COLUMNS} FROM playbooks WHERE id = ?");
        let row = on_pool!(self, p => sqlx::query_as::<_, Playbook>(&sql).bind(id).fetch_optional(p).await?);
        row.ok_or_else(|| StoreError::NotFound(format!("playbook {id}")))
    }

    pub async fn get_playbook_by_name(&self, name: &str) -> Result<Playbook> {
        let sql = format!("SELECT {COLUMNS} FROM playbooks WHERE name = ?");
        let row = on_pool!(self, p => sqlx::query_as::<_, Playbook>(&sql).bind(name).fetch_optional(p).await?);
        row.ok_or_else(|| StoreError::NotFound(format!("playbook '{name}'")))
    }

    /// Playbooks ordered by name.
    pub async fn list_playbooks(
        &self,
        active: Option<bool>,
        paging: Paging,
    ) -> Result<Page<Playbook>> {
        Ok(
            page!(self, Playbook, select: COLUMNS, from: "playbooks", order: "name", paging: paging,
            filters: [("is_active", active)]),
        )
    }

    /// Points a playbook at new content (a new file and hash) and metadata.
    pub async fn update_playbook(
        &self,
        id: PlaybookId,
        new: &NewPlaybook,
        actor: &Actor,
    ) -> Result<Playbook> {
        new.check()?;
        let tags = json_object_text("tags", new.tags.as_ref())?;
        let vars = json_object_text("variables", new.variables.as_ref())?;
        let old = self.get_playbook(id).await?;
        on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            sqlx::query(
                "UPDATE playbooks SET name = ?, description = ?, file_path = ?, file_hash = ?, tags = ?, \
                 variables = ?, updated_at = ? WHERE id = ?",
            )
            .bind(&new.name).bind(&new.description).bind(&new.file_path).bind(&new.file_hash)
            .bind(&tags).bind(&vars).bind(now()).bind(id)
            .execute(&mut *tx).await
            .map_err(|e| StoreError::on_write(e, || format!("playbook '{}'", new.name)))?;
            insert_audit!(&mut *tx, &NewAudit {
                actor, action: "UPDATE", resource_type: "playbook", resource_id: Some(id.0),
                details: Some(json!({"old": {"name": old.name, "file_hash": old.file_hash},
                                     "new": {"name": new.name, "file_hash": new.file_hash}})),
            })?;
            tx.commit().await?;
        });
        self.get_playbook(id).await
    }

    /// Soft delete (or undo it): jobs keep referring to the row.
    pub async fn set_playbook_active(
        &self,
        id: PlaybookId,
        active: bool,
        actor: &Actor,
    ) -> Result<Playbook> {
        let row = self.get_playbook(id).await?;
        self.set_row_active(&retire::PLAYBOOKS, id.0, &row.name, active, actor)
            .await?;
        self.get_playbook(id).await
    }

    /// Deletes a playbook no job refers to; one with jobs can only be deactivated.
    pub async fn delete_playbook(&self, id: PlaybookId, actor: &Actor) -> Result<()> {
        let row = self.get_playbook(id).await?;
        self.delete_unreferenced(&retire::PLAYBOOKS, id.0, &row.name, actor)
            .await
    }
}
