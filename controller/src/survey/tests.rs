use super::*;
use serde_json::json;

fn q(name: &str, kind: QuestionKind) -> Question {
    Question {
        name: name.into(),
        kind,
        label: None,
        help: None,
        required: false,
        default: None,
        max_length: None,
        min: None,
        max: None,
        choices: Vec::new(),
    }
}

fn fields(errs: &[FieldError]) -> Vec<&str> {
    errs.iter().map(|e| e.field.as_str()).collect()
}

fn answers(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

fn full_survey() -> Vec<Question> {
    vec![
        Question {
            max_length: Some(10),
            required: true,
            ..q("app", QuestionKind::Text)
        },
        q("notes", QuestionKind::Multiline),
        Question {
            min: Some(1),
            max: Some(10),
            default: Some(json!(2)),
            ..q("count", QuestionKind::Integer)
        },
        Question {
            choices: vec!["eu".into(), "us".into()],
            required: true,
            ..q("region", QuestionKind::Choice)
        },
        Question {
            choices: vec!["web".into(), "db".into(), "cache".into()],
            ..q("roles", QuestionKind::MultiChoice)
        },
        Question {
            max_length: Some(64),
            ..q("token", QuestionKind::Secret)
        },
    ]
}

#[test]
fn a_full_survey_is_valid_and_good_answers_become_vars_and_secrets() {
    let s = full_survey();
    check_definition(&s).unwrap();
    let a = answer(
        &s,
        &answers(json!({
            "app": "shop", "notes": "line 1\nline 2", "count": "7", "region": "eu",
            "roles": ["web", "db"], "token": "s3cr3t",
        })),
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(
        Value::Object(a.vars.clone()),
        json!({"app": "shop", "notes": "line 1\nline 2", "count": 7, "region": "eu", "roles": ["web", "db"]})
    );
    assert_eq!(a.secrets.len(), 1);
    assert_eq!(
        (a.secrets[0].0.as_str(), a.secrets[0].1.as_str()),
        ("token", "s3cr3t")
    );
    assert_eq!(a.masked()["token"], json!("********"));
    let sealed: Value = serde_json::from_slice(&a.secrets_json()).unwrap();
    assert_eq!(sealed, json!({"token": "s3cr3t"}));
}

#[test]
fn defaults_fill_and_optional_questions_may_be_left_out() {
    let s = full_survey();
    let a = answer(
        &s,
        &answers(json!({"app": "x", "region": "us", "notes": ""})),
    )
    .unwrap();
    assert_eq!(
        Value::Object(a.vars),
        json!({"app": "x", "count": 2, "region": "us"})
    );
    assert!(a.secrets.is_empty());
}

#[test]
fn each_bad_answer_is_named_with_why() {
    let s = full_survey();
    let errs = answer(
        &s,
        &answers(json!({
            "app": "far too long a name", "count": 11, "roles": ["web", "mail"],
            "token": 5, "surprise": 1,
        })),
    )
    .unwrap_err();
    let mut got = fields(&errs);
    got.sort();
    assert_eq!(
        got,
        ["app", "count", "region", "roles", "surprise", "token"],
        "{errs:?}"
    );
    let msg = |f: &str| errs.iter().find(|e| e.field == f).unwrap().message.clone();
    assert!(msg("app").contains("at most 10"), "{}", msg("app"));
    assert!(msg("count").contains("above the maximum 10"));
    assert!(msg("region").contains("required"));
    assert!(msg("roles").contains("\"mail\" is not a choice"));
    assert!(msg("surprise").contains("not a question"));
    assert!(msg("token").contains("text"));
}

#[test]
fn integers_are_whole_and_bounded_both_ways() {
    let s = vec![Question {
        min: Some(-5),
        max: Some(5),
        ..q("n", QuestionKind::Integer)
    }];
    for ok in [json!(-5), json!(5), json!("0"), json!(" 3 ")] {
        answer(&s, &answers(json!({ "n": ok }))).unwrap();
    }
    for (bad, why) in [
        (json!(-6), "below the minimum -5"),
        (json!(6), "above the maximum 5"),
        (json!(1.5), "whole number"),
        (json!("two"), "whole number"),
        (json!(true), "whole number"),
        (json!("99999999999999999999"), "whole number"),
    ] {
        let e = answer(&s, &answers(json!({ "n": bad }))).unwrap_err();
        assert!(e[0].message.contains(why), "{bad}: {e:?}");
    }
}

#[test]
fn text_is_one_line_and_multiline_keeps_its_lines() {
    let s = vec![q("t", QuestionKind::Text), q("m", QuestionKind::Multiline)];
    let e = answer(&s, &answers(json!({"t": "a\nb"}))).unwrap_err();
    assert_eq!(fields(&e), ["t"]);
    assert!(e[0].message.contains("one line"));
    let e = answer(&s, &answers(json!({"m": "a\u{0}b"}))).unwrap_err();
    assert_eq!(fields(&e), ["m"]);
    let long = "x".repeat(1025);
    let e = answer(&s, &answers(json!({ "t": long }))).unwrap_err();
    assert!(e[0].message.contains("at most 1024"), "{e:?}");
    answer(&s, &answers(json!({"m": "a\r\n\tb"}))).unwrap();
}

#[test]
fn choices_take_only_what_is_listed() {
    let s = vec![
        Question {
            choices: vec!["a".into(), "b".into()],
            ..q("one", QuestionKind::Choice)
        },
        Question {
            choices: vec!["a".into(), "b".into()],
            required: true,
            ..q("many", QuestionKind::MultiChoice)
        },
    ];
    let a = answer(&s, &answers(json!({"one": "b", "many": "b, a"}))).unwrap();
    assert_eq!(a.vars["many"], json!(["b", "a"]));
    for (bad, field) in [
        (json!({"one": "c", "many": ["a"]}), "one"),
        (json!({"one": ["a"], "many": ["a"]}), "one"),
        (json!({"many": ["a", "a"]}), "many"),
        (json!({"many": []}), "many"),
        (json!({"many": [1]}), "many"),
        (json!({"many": {"a": 1}}), "many"),
    ] {
        let e = answer(&s, &answers(bad.clone())).unwrap_err();
        assert_eq!(fields(&e), [field], "{bad}: {e:?}");
    }
}

#[test]
fn secrets_are_bounded_never_defaulted_and_never_quoted() {
    let s = vec![Question {
        required: true,
        ..q("pw", QuestionKind::Secret)
    }];
    let e = answer(&s, &answers(json!({"pw": "p".repeat(4097)}))).unwrap_err();
    assert!(e[0].message.contains("at most 4096"));
    assert!(!e[0].message.contains("ppp"));
    let e = answer(&s, &answers(json!({}))).unwrap_err();
    assert!(e[0].message.contains("required"));
    let mut with_default = s.clone();
    with_default[0].default = Some(json!("hunter2"));
    let e = check_definition(&with_default).unwrap_err();
    assert_eq!(fields(&e), ["survey.pw.default"]);
}

#[test]
fn answers_are_data_kept_verbatim() {
    let s = vec![q("msg", QuestionKind::Text)];
    let attack = "{{ lookup('pipe','touch /tmp/pwned') }}";
    let a = answer(&s, &answers(json!({ "msg": attack }))).unwrap();
    assert_eq!(a.vars["msg"], json!(attack));
}

#[test]
fn a_bad_definition_names_each_problem() {
    let mut s = vec![
        q("ok", QuestionKind::Text),
        q("ok", QuestionKind::Text),
        q("9bad", QuestionKind::Text),
        q("ansible_user", QuestionKind::Text),
        Question {
            min: Some(1),
            ..q("t", QuestionKind::Text)
        },
        Question {
            min: Some(5),
            max: Some(1),
            default: Some(json!(3)),
            ..q("n", QuestionKind::Integer)
        },
        Question {
            choices: vec!["a".into(), "a".into(), " ".into()],
            ..q("c", QuestionKind::Choice)
        },
        q("empty", QuestionKind::Choice),
        Question {
            choices: vec!["a,b".into()],
            ..q("mc", QuestionKind::MultiChoice)
        },
        Question {
            choices: vec!["a".into()],
            default: Some(json!("z")),
            ..q("d", QuestionKind::Choice)
        },
        Question {
            max_length: Some(0),
            ..q("ml", QuestionKind::Multiline)
        },
        Question {
            max_length: Some(3),
            ..q("i", QuestionKind::Integer)
        },
        Question {
            label: Some("x".repeat(201)),
            help: Some("bell\u{7}".into()),
            ..q("l", QuestionKind::Text)
        },
    ];
    let e = check_definition(&s).unwrap_err();
    let got = fields(&e);
    for want in [
        "survey.ok.name",
        "survey[2].name",
        "survey.ansible_user.name",
        "survey.t.min",
        "survey.n.min",
        "survey.n.default",
        "survey.c.choices",
        "survey.empty.choices",
        "survey.mc.choices",
        "survey.d.default",
        "survey.ml.max_length",
        "survey.i.max_length",
        "survey.l.label",
        "survey.l.help",
    ] {
        assert!(got.contains(&want), "{want} missing from {got:?}");
    }
    s.truncate(1);
    check_definition(&s).unwrap();
}

#[test]
fn a_survey_has_a_size_limit() {
    let many: Vec<Question> = (0..=MAX_QUESTIONS)
        .map(|i| q(&format!("q{i}"), QuestionKind::Text))
        .collect();
    let e = check_definition(&many).unwrap_err();
    assert_eq!(fields(&e), ["survey"]);
    let big = vec![
        Question {
            choices: (0..MAX_CHOICES)
                .map(|i| format!("{i}{}", "c".repeat(MAX_CHOICE - 4)))
                .collect(),
            ..q("big", QuestionKind::Choice)
        };
        20
    ];
    let e = check_definition(&big).unwrap_err();
    assert!(e[0].message.contains("bytes as JSON"), "{e:?}");
    let too_many_choices = vec![Question {
        choices: (0..=MAX_CHOICES).map(|i| i.to_string()).collect(),
        ..q("c", QuestionKind::Choice)
    }];
    assert_eq!(
        fields(&check_definition(&too_many_choices).unwrap_err()),
        ["survey.c.choices"]
    );
}
