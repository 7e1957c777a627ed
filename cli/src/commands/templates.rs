//! Job templates: list and show them, launch one with answers to its survey (secret answers
//! typed unechoed or read from a file, never from the command line), and — admins — write
//! them from a YAML or JSON file.

use std::path::Path;

use anyhow::{bail, Context as _};
use outpost_api::*;
use serde_json::Value;
use zeroize::Zeroizing;

use super::credentials::{read_limited, without_final_newline};
use super::{client, prompt_hidden, ALL};
use crate::output::{time, Output};
use crate::{inventory, terminal, TemplateCmd};

/// The largest template file read.
const MAX_FILE: usize = 512 * 1024;

pub async fn templates(ctx: Option<&str>, cmd: TemplateCmd, out: Output) -> anyhow::Result<u8> {
    let c = client(ctx)?;
    match cmd {
        TemplateCmd::List => {
            let page = c.templates().list(&ALL).await?;
            if !out.json(&page) {
                let rows = page
                    .items
                    .iter()
                    .map(|t| {
                        vec![
                            t.name.clone(),
                            what_it_runs(t),
                            t.survey.len().to_string(),
                            t.description.clone().unwrap_or_else(|| "-".into()),
                            time(&Some(t.updated_at)),
                        ]
                    })
                    .collect();
                out.table(
                    &["template", "runs", "questions", "description", "updated"],
                    rows,
                );
            }
        }
        TemplateCmd::Show { template } => {
            let t = c.templates().get(&template).await?;
            if !out.json(&t) {
                let text = serde_json::to_string_pretty(&t)?;
                println!("{}", terminal::json(&text));
            }
        }
        TemplateCmd::Launch {
            template,
            answers,
            secret_answers,
            follow,
            raw,
        } => {
            let t = c.templates().get(&template).await?;
            let req = TemplateLaunchRequest {
                answers: collect_answers(&t, &answers, &secret_answers)?,
                rollout: None,
            };
            let launched = c.templates().launch(&template, &req).await?;
            return super::jobs::launched_jobs(&c, &launched, follow, raw, out).await;
        }
        TemplateCmd::Create { file } => {
            let t = c.templates().create(&read_spec(&file)?).await?;
            if !out.json(&t) {
                println!(
                    "template {} created (id {})",
                    terminal::escape(&t.name),
                    t.id
                );
            }
        }
        TemplateCmd::Update { template, file } => {
            let t = c.templates().update(&template, &read_spec(&file)?).await?;
            if !out.json(&t) {
                println!("template {} replaced", terminal::escape(&t.name));
            }
        }
        TemplateCmd::Rm { template } => {
            let r = c.templates().delete(&template).await?;
            if !out.json(&r) {
                println!("{}", terminal::escape(&r.message));
            }
        }
    }
    Ok(0)
}

fn what_it_runs(t: &TemplateView) -> String {
    match (&t.playbook, &t.project, &t.playbook_path) {
        (Some(p), _, _) => p.name.clone(),
        (None, Some(p), Some(path)) => format!("{}:{path}", p.name),
        _ => "-".into(),
    }
}

/// A template file: YAML (or JSON, which YAML reads too) in the shape of the API's body.
fn read_spec(path: &Path) -> anyhow::Result<TemplateSpec> {
    let text = read_limited(path, MAX_FILE)?;
    let value = inventory::yaml_document(&text)
        .with_context(|| format!("{} is not YAML", path.display()))?;
    serde_json::from_value(value).with_context(|| format!("{} is not a template", path.display()))
}

/// `-a name=value` answers, typed as the survey asks (integers as numbers, multi-choice as
/// `a,b`), and the secret ones: `--secret-answer NAME` asks on the terminal, `NAME=PATH` reads
/// the file (`-`: standard input).
fn collect_answers(
    t: &TemplateView,
    answers: &[String],
    secrets: &[String],
) -> anyhow::Result<JsonObject> {
    let mut out = JsonObject::new();
    for a in answers {
        let (k, v) = a
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .with_context(|| format!("answer '{a}' is not name=value"))?;
        let q = t.survey.iter().find(|q| q.name == k);
        if q.is_some_and(|q| q.kind == QuestionKind::Secret) {
            bail!("{k} is a secret question: give it with --secret-answer {k} (asked on the terminal) or --secret-answer {k}=FILE, never on the command line");
        }
        out.insert(k.to_owned(), Value::String(v.to_owned()));
    }
    for s in secrets {
        let (name, file) = match s.split_once('=') {
            Some((n, f)) => (n, Some(f)),
            None => (s.as_str(), None),
        };
        let value: Zeroizing<String> = match file {
            Some(f) => without_final_newline(read_limited(Path::new(f), 4096)?),
            None => Zeroizing::new(prompt_hidden(
                &format!("{name}: "),
                &format!("give --secret-answer {name}=FILE (or {name}=- for standard input)"),
            )?),
        };
        out.insert(name.to_owned(), Value::String(value.as_str().to_owned()));
    }
    Ok(out)
}
