//! Job templates' bodies: a saved launch (playbook, target, variables, run options, time limit)
//! with a survey of typed questions whose answers become the launch's variables.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::types::{IdOrName, JsonObject, NameRef, RunOptions, ServerSelector};

/// What a survey question asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum QuestionKind {
    /// One line of text (`max_length`).
    Text,
    /// Text over several lines (`max_length`).
    Multiline,
    /// A whole number (`min`, `max`).
    Integer,
    /// One of `choices`.
    Choice,
    /// Any of `choices`, as a list.
    MultiChoice,
    /// Text never shown, stored sealed and handed to the play apart from the other variables.
    Secret,
}

impl QuestionKind {
    pub const ALL: &'static [QuestionKind] = &[
        QuestionKind::Text,
        QuestionKind::Multiline,
        QuestionKind::Integer,
        QuestionKind::Choice,
        QuestionKind::MultiChoice,
        QuestionKind::Secret,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            QuestionKind::Text => "text",
            QuestionKind::Multiline => "multiline",
            QuestionKind::Integer => "integer",
            QuestionKind::Choice => "choice",
            QuestionKind::MultiChoice => "multi_choice",
            QuestionKind::Secret => "secret",
        }
    }
}

/// One survey question. Only the fields of its kind may be set: `max_length` for text,
/// multiline and secret; `pattern` for text; `min`/`max` for integer; `choices` for choice and
/// multi-choice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Question {
    /// The variable the answer sets (a letter or `_`, then letters, digits or `_`).
    pub name: String,
    #[serde(rename = "type")]
    pub kind: QuestionKind,
    /// What the launch form shows; the name when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
    #[serde(default)]
    pub required: bool,
    /// Used when the question is not answered (never for a secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub default: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<u32>,
    /// A regular expression the whole answer must match (text only), e.g. `[0-9]+\.[0-9]+`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub choices: Vec<String>,
}

/// A template as an admin writes it (create, or replace whole). The playbook is named one way
/// (`playbook`, or `project` + `playbook_path`) and the target one way (`servers`, or
/// `filter`), as in a launch.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateSpec {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub playbook: Option<IdOrName>,
    #[serde(default)]
    pub project: Option<IdOrName>,
    #[serde(default)]
    pub playbook_path: Option<String>,
    /// Servers by hostname.
    #[serde(default)]
    pub servers: Option<Vec<String>>,
    #[serde(default)]
    pub filter: Option<ServerSelector>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub extra_vars: Option<JsonObject>,
    #[serde(default)]
    pub options: RunOptions,
    /// Seconds a job may run; the controller's default when absent.
    #[serde(default)]
    pub time_limit_secs: Option<u32>,
    #[serde(default)]
    pub survey: Vec<Question>,
    /// How its launches roll out, unless a launch gives its own.
    #[serde(default)]
    pub rollout: Option<crate::types::Rollout>,
}

/// A template as anyone may read it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TemplateView {
    pub id: i32,
    pub uuid: String,
    pub name: String,
    pub description: Option<String>,
    /// The playbook, when named directly.
    pub playbook: Option<NameRef>,
    /// The project, when named with a path.
    pub project: Option<NameRef>,
    pub playbook_path: Option<String>,
    pub servers: Option<Vec<String>>,
    pub filter: Option<ServerSelector>,
    #[schema(value_type = Option<Object>)]
    pub extra_vars: Option<JsonObject>,
    pub options: RunOptions,
    pub time_limit_secs: Option<u32>,
    pub survey: Vec<Question>,
    #[serde(default)]
    pub rollout: Option<crate::types::Rollout>,
    pub created_by: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A template launch: one answer per survey question, by variable name.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateLaunchRequest {
    #[serde(default)]
    #[schema(value_type = Object)]
    pub answers: JsonObject,
    /// How this launch rolls out (waves, approval, failure budgets); left out, all at once.
    #[serde(default)]
    pub rollout: Option<crate::types::Rollout>,
}

/// How a secret answer is shown, wherever answers are shown.
pub const MASK: &str = "********";
