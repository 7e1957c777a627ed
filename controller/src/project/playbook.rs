//! What makes a YAML file a playbook: one document, a non-empty list of plays (mappings),
//! read within bounded limits. Used for uploaded playbooks and to find a project's playbooks.

/// Why a text is not a playbook.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotAPlaybook {
    #[error("{0}")]
    Yaml(String),
    #[error("a playbook is one YAML document; this has {0}")]
    Documents(usize),
    #[error("a playbook is a list of plays (- hosts: …); this document is not a list")]
    NotAList,
    #[error("the playbook has no plays")]
    NoPlays,
    #[error("play {0} is not a mapping (expected keys such as hosts: and tasks:)")]
    PlayNotAMapping(usize),
}

/// Checks that `content` is a playbook: YAML whose document is a non-empty list of plays
/// (mappings), read within [`Limits::FILE`](outpost_api::yaml::Limits::FILE) so that aliases
/// and nesting cannot blow it up. The error says what is wrong and where.
pub fn check_playbook(content: &str) -> std::result::Result<(), NotAPlaybook> {
    let docs = outpost_api::yaml::parse(content, outpost_api::yaml::Limits::FILE)
        .map_err(|e| NotAPlaybook::Yaml(e.to_string()))?;
    let [doc] = docs.as_slice() else {
        return Err(NotAPlaybook::Documents(docs.len()));
    };
    let plays = doc.as_array().ok_or(NotAPlaybook::NotAList)?;
    if plays.is_empty() {
        return Err(NotAPlaybook::NoPlays);
    }
    match plays.iter().position(|p| !p.is_object()) {
        Some(i) => Err(NotAPlaybook::PlayNotAMapping(i + 1)),
        None => Ok(()),
    }
}

/// A list of plays, one of which names its hosts or imports a playbook: a list of mappings
/// alone could be a requirements file or a variables file.
pub fn is_playbook(text: &str) -> bool {
    if check_playbook(text).is_err() {
        return false;
    }
    let Ok(docs) = outpost_api::yaml::parse(text, outpost_api::yaml::Limits::FILE) else {
        return false;
    };
    docs.first()
        .and_then(|d| d.as_array())
        .is_some_and(|plays| {
            plays.iter().any(|p| {
                p.as_object().is_some_and(|m| {
                    m.contains_key("hosts")
                        || m.contains_key("import_playbook")
                        || m.contains_key("ansible.builtin.import_playbook")
                })
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_lists_of_plays_are_playbooks() {
        assert!(check_playbook("- hosts: all\n  tasks: []\n").is_ok());
        assert!(check_playbook("hosts: all\n")
            .unwrap_err()
            .to_string()
            .contains("not a list"));
        assert!(check_playbook("- just a string\n")
            .unwrap_err()
            .to_string()
            .contains("play 1"));
        assert!(check_playbook("[]\n").unwrap_err() == NotAPlaybook::NoPlays);
        assert!(check_playbook("- hosts: [\n")
            .unwrap_err()
            .to_string()
            .contains("not valid YAML"));
        assert!(check_playbook("- hosts: a\n---\n- hosts: b\n").is_err());
    }
}
