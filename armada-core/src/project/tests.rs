//! Plan building from in-memory project files: `$env_` substitution, CSV overrides, every
//! diagnostic with its exact location, run overrides and the plan's accessors.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Value, json};

use super::{Diagnostic, NamedFile, Plan, ProjectFiles, RunOverrides, RunSettings};

const TEMPLATE: &str = "config/config_template.json";
const TUNE: &str = "config/config_local.json";
const AGENT_CSV: &str = "config/data_agent.csv";
const JOB_CSV: &str = "config/data_job.csv";

/// Job `index`'s payload, parsed.
fn payload(plan: &Plan, index: u64) -> Value {
    serde_json::from_str(plan.job_payload(index).get()).unwrap()
}

fn project(template: &str) -> ProjectFiles {
    ProjectFiles {
        template: NamedFile::new(TEMPLATE, template),
        tune: None,
        tune_name: TUNE.to_owned(),
        agent_csv: None,
        job_csv: None,
    }
}

fn with_tune(mut files: ProjectFiles, tune: &str) -> ProjectFiles {
    files.tune = Some(NamedFile::new(TUNE, tune));
    files
}

fn with_agent_csv(mut files: ProjectFiles, csv: &str) -> ProjectFiles {
    files.agent_csv = Some(NamedFile::new(AGENT_CSV, csv));
    files
}

fn with_job_csv(mut files: ProjectFiles, csv: &str) -> ProjectFiles {
    files.job_csv = Some(NamedFile::new(JOB_CSV, csv));
    files
}

fn plan(files: &ProjectFiles) -> Plan {
    match Plan::build::<Value, Value>(files, &RunOverrides::default()) {
        Ok(plan) => plan,
        Err(error) => panic!("the plan should build, got: {error}"),
    }
}

/// The problems of a plan that must not build, sorted so the order they were found in does not
/// matter.
fn problems_of(result: crate::Result<Plan>) -> Vec<Diagnostic> {
    match result {
        Ok(plan) => panic!("the plan should not build, got {plan:?}"),
        Err(crate::Error::Invalid(diagnostics)) => {
            let mut found: Vec<Diagnostic> = diagnostics.iter().cloned().collect();
            found.sort_by(|a, b| {
                (&a.file, a.line, a.column, &a.field, &a.message)
                    .cmp(&(&b.file, b.line, b.column, &b.field, &b.message))
            });
            found
        }
        Err(other) => panic!("expected Error::Invalid, got {other:?}"),
    }
}

fn problems(files: &ProjectFiles) -> Vec<Diagnostic> {
    problems_of(Plan::build::<Value, Value>(files, &RunOverrides::default()))
}

/// Where a diagnostic points: file, line, column and field.
type Location<'a> = (&'a str, Option<u64>, Option<u64>, Option<&'a str>);

fn diagnostic(
    file: &str,
    line: Option<u64>,
    column: Option<u64>,
    field: Option<&str>,
    message: &str,
) -> Diagnostic {
    Diagnostic {
        file: file.to_owned(),
        line,
        column,
        field: field.map(str::to_owned),
        message: message.to_owned(),
    }
}

fn jobs_template(jobs: u64, default_job: &Value) -> String {
    json!({
        "run_message": { "agents": 1, "jobs": jobs },
        "default_job_message": default_job,
    })
    .to_string()
}

// ---------------------------------------------------------------------------------------------
// `$env_` placeholders

#[derive(Debug, Deserialize, PartialEq)]
struct TypedAgent {
    port: u16,
    headless: bool,
    ratio: f64,
    proxy: TypedProxy,
    tags: Vec<Value>,
    name: String,
    nothing: Option<u8>,
}

#[derive(Debug, Deserialize, PartialEq)]
struct TypedProxy {
    server: String,
    auth: Value,
}

#[test]
fn env_placeholders_keep_the_json_type_of_the_tune_value() {
    let files = with_tune(
        project(
            r#"{
                "run_message": {"agents": "$env_AGENTS", "jobs": 1},
                "default_agent_message": {
                    "port": "$env_PORT", "headless": "$env_HEADLESS", "ratio": "$env_RATIO",
                    "proxy": "$env_PROXY", "tags": "$env_TAGS", "name": "$env_NAME",
                    "nothing": "$env_NULL"
                }
            }"#,
        ),
        r#"{"AGENTS": 2, "PORT": 8080, "HEADLESS": false, "RATIO": 0.25,
            "PROXY": {"server": "http://proxy:3128", "auth": {"user": "u"}},
            "TAGS": ["a", 1, true], "NAME": "bob", "NULL": null, "UNUSED": "x"}"#,
    );
    let plan = match Plan::build::<TypedAgent, Value>(&files, &RunOverrides::default()) {
        Ok(plan) => plan,
        Err(error) => panic!("typed agent config should deserialize: {error}"),
    };
    assert_eq!(plan.agents(), 2);
    let expected = json!({
        "port": 8080, "headless": false, "ratio": 0.25,
        "proxy": {"server": "http://proxy:3128", "auth": {"user": "u"}},
        "tags": ["a", 1, true], "name": "bob", "nothing": null
    });
    assert_eq!(plan.agent_message(0), &expected);
    assert_eq!(plan.agent_message(1), &expected);
}

#[test]
fn env_placeholders_are_replaced_in_nested_objects_and_arrays_only_as_whole_strings() {
    let files = with_tune(
        project(
            r#"{
                "run_message": {"agents": 1, "jobs": 1},
                "default_job_message": {
                    "outer": {"inner": {"value": "$env_DEEP"}},
                    "list": ["$env_A", {"x": "$env_B"}, ["$env_C"], 7],
                    "prefixed": "prefix $env_A",
                    "bare": "$env_",
                    "case": "$ENV_A",
                    "no_recursion": "$env_LOOP"
                }
            }"#,
        ),
        r#"{"DEEP": 3.5, "A": "alpha", "B": [1, 2], "C": {"k": "v"}, "LOOP": "$env_LOOP"}"#,
    );
    let plan = plan(&files);
    assert_eq!(
        payload(&plan, 0),
        json!({
            "outer": {"inner": {"value": 3.5}},
            "list": ["alpha", {"x": [1, 2]}, [{"k": "v"}], 7],
            "prefixed": "prefix $env_A",
            "bare": "$env_",
            "case": "$ENV_A",
            "no_recursion": "$env_LOOP"
        })
    );
}

#[test]
fn a_missing_tune_key_names_the_placeholder_the_field_and_the_tune_file() {
    let files = with_tune(
        project(
            r#"{
                "run_message": {"agents": 1, "jobs": 1},
                "default_job_message": {
                    "proxy": {"server": "$env_PROXY_SERVER"},
                    "list": [1, "$env_IN_ARRAY"],
                    "found": "$env_OTHER"
                }
            }"#,
        ),
        r#"{"OTHER": 1}"#,
    );
    assert_eq!(
        problems(&files),
        vec![
            diagnostic(
                TEMPLATE,
                None,
                None,
                Some("default_job_message.list[1]"),
                "placeholder `$env_IN_ARRAY` has no value in config/config_local.json: add \
                 \"IN_ARRAY\": <value> to it",
            ),
            diagnostic(
                TEMPLATE,
                None,
                None,
                Some("default_job_message.proxy.server"),
                "placeholder `$env_PROXY_SERVER` has no value in config/config_local.json: add \
                 \"PROXY_SERVER\": <value> to it",
            ),
        ]
    );
}

#[test]
fn a_missing_tune_file_is_named_when_a_placeholder_needs_it() {
    let mut files = project(
        r#"{"run_message": {"agents": 1, "jobs": 1},
            "default_agent_message": {"key": "$env_KEY"}}"#,
    );
    files.tune_name = "config/config_distant.json".to_owned();
    assert_eq!(
        problems(&files),
        vec![diagnostic(
            TEMPLATE,
            None,
            None,
            Some("default_agent_message.key"),
            "placeholder `$env_KEY` has no value because config/config_distant.json does not \
             exist: create it with \"KEY\": <value>, or choose another tune file",
        )]
    );
}

#[test]
fn a_template_without_placeholders_needs_no_tune_file() {
    let files = project(
        r#"{"run_message": {"agents": 1, "jobs": 2},
            "default_agent_message": {"text": "no $env_ here", "price": "$5"},
            "default_job_message": {"n": 1}}"#,
    );
    let plan = plan(&files);
    assert_eq!(
        plan.agent_message(0),
        &json!({"text": "no $env_ here", "price": "$5"})
    );
    assert_eq!(payload(&plan, 1), json!({"n": 1}));
}

#[test]
fn an_invalid_tune_file_is_located() {
    let files = with_tune(
        project(r#"{"run_message": {"agents": 1, "jobs": 1}}"#),
        "{\n  \"A\": 1\n  \"B\": 2\n}",
    );
    assert_eq!(
        problems(&files),
        vec![diagnostic(
            TUNE,
            Some(3),
            Some(3),
            None,
            "invalid JSON: expected `,` or `}` at line 3 column 3",
        )]
    );
    let files = with_tune(
        project(r#"{"run_message": {"agents": 1, "jobs": 1}}"#),
        "[1]",
    );
    assert_eq!(
        problems(&files),
        vec![diagnostic(
            TUNE,
            None,
            None,
            None,
            "must hold a JSON object, found an array"
        )]
    );
}

// ---------------------------------------------------------------------------------------------
// CSV overrides

#[test]
fn dotted_headers_and_json_objects_deep_merge_and_arrays_replace() {
    let default_job = json!({
        "proxy": {"server": "default:1", "user": "anon", "opts": {"a": 1, "b": 2}},
        "label": "none",
        "tags": ["x", "w"]
    });
    let files = with_job_csv(
        project(&jobs_template(4, &default_job)),
        "targetted_job,proxy.server,proxy.opts,tags,label\n\
         0,p0:8080,\"{\"\"b\"\":20,\"\"c\"\":30}\",\"[\"\"y\"\"]\",\n\
         1,,,,\"a, b\"\n",
    );
    let plan = plan(&files);
    assert_eq!(plan.jobs(), 4);
    assert_eq!(
        payload(&plan, 0),
        json!({
            "proxy": {"server": "p0:8080", "user": "anon", "opts": {"a": 1, "b": 20, "c": 30}},
            "label": "none",
            "tags": ["y"]
        })
    );
    assert_eq!(
        payload(&plan, 1),
        json!({
            "proxy": {"server": "default:1", "user": "anon", "opts": {"a": 1, "b": 2}},
            "label": "a, b",
            "tags": ["x", "w"]
        })
    );
    assert_eq!(payload(&plan, 2), default_job);
    assert!(Arc::ptr_eq(plan.job_payload(2), plan.job_payload(3)));
    assert!(!Arc::ptr_eq(plan.job_payload(0), plan.job_payload(2)));
}

#[test]
fn dotted_headers_create_nested_objects_missing_from_the_default() {
    let files = with_agent_csv(
        project(r#"{"run_message": {"agents": 2, "jobs": 1}, "default_agent_message": {"k": 1}}"#),
        "targetted_agent,proxy.auth.user,proxy.server\n1,me,host:1\n",
    );
    let plan = plan(&files);
    assert_eq!(plan.agent_message(0), &json!({"k": 1}));
    assert_eq!(
        plan.agent_message(1),
        &json!({"k": 1, "proxy": {"auth": {"user": "me"}, "server": "host:1"}})
    );
}

#[test]
fn cells_are_read_as_json_scalars_or_as_text() {
    let default_job = json!({
        "n": 0, "f": 0, "neg": 0, "t": "?", "fa": "?", "nul": "was set", "text": 0,
        "quoted": 0, "zip": 0, "spaces": 0, "kept": "default", "word_null": 1
    });
    let files = with_job_csv(
        project(&jobs_template(1, &default_job)),
        "targetted_job,n,f,neg,t,fa,nul,text,quoted,zip,spaces,kept,word_null\n\
         0,42,1.5,-3,true,false,null,hello world,\"\"\"quoted\"\"\",01,  7  ,,Null\n",
    );
    assert_eq!(
        payload(&plan(&files), 0),
        json!({
            "n": 42, "f": 1.5, "neg": -3, "t": true, "fa": false, "nul": null,
            "text": "hello world", "quoted": "quoted", "zip": "01", "spaces": 7,
            "kept": "default", "word_null": "Null"
        })
    );
}

#[test]
fn rfc4180_quoting_commas_doubled_quotes_and_newlines() {
    let files = with_job_csv(
        project(&jobs_template(2, &json!({}))),
        "targetted_job,comma,quotes,newline\r\n\
         0,\"a, b\",\"say \"\"hi\"\"\",\"line1\nline2\"\r\n\
         1,\"\",\"\"\"\"\"\",\"{\"\"k\"\":\n[1,\n2]}\"\r\n",
    );
    let plan = plan(&files);
    assert_eq!(
        payload(&plan, 0),
        json!({"comma": "a, b", "quotes": "say \"hi\"", "newline": "line1\nline2"})
    );
    // An empty quoted cell keeps the default; `""""""` is the JSON string `""` (empty text).
    assert_eq!(
        payload(&plan, 1),
        json!({"quotes": "", "newline": {"k": [1, 2]}})
    );
}

#[test]
fn a_utf8_bom_before_the_first_header_is_accepted() {
    let files = with_job_csv(
        project(&jobs_template(1, &json!({"name": "default"}))),
        "\u{feff}targetted_job,name\n0,bob\n",
    );
    assert_eq!(payload(&plan(&files), 0), json!({"name": "bob"}));
    let files = with_agent_csv(
        project(r#"{"run_message": {"agents": 1, "jobs": 1}}"#),
        "\u{feff}\"targetted_agent\",name\n0,ann\n",
    );
    assert_eq!(plan(&files).agent_message(0), &json!({"name": "ann"}));
}

#[test]
fn empty_and_header_only_files_mean_defaults_for_everyone() {
    for csv in ["", "  \r\n\n", "targetted_job,name\n", "targetted_job,name"] {
        let files = with_job_csv(project(&jobs_template(2, &json!({"name": "d"}))), csv);
        let plan = plan(&files);
        assert_eq!(plan.jobs(), 2, "csv {csv:?}");
        assert_eq!(payload(&plan, 0), json!({"name": "d"}), "csv {csv:?}");
        assert!(
            Arc::ptr_eq(plan.job_payload(0), plan.job_payload(1)),
            "csv {csv:?}"
        );
    }
    for csv in ["", "targetted_agent,name\n"] {
        let files = with_agent_csv(
            project(
                r#"{"run_message": {"agents": 2, "jobs": 1}, "default_agent_message": {"a": 1}}"#,
            ),
            csv,
        );
        let plan = plan(&files);
        assert_eq!(plan.agent_message(0), &json!({"a": 1}), "csv {csv:?}");
        assert_eq!(plan.agent_message(1), &json!({"a": 1}), "csv {csv:?}");
    }
}

#[test]
fn without_run_message_jobs_the_job_count_is_the_number_of_csv_rows() {
    let files = with_job_csv(
        project(r#"{"run_message": {"agents": 1}, "default_job_message": {"name": "d"}}"#),
        "targetted_job,name\n2,c\n0,a\n1,\n",
    );
    let plan = plan(&files);
    assert_eq!(plan.jobs(), 3);
    assert_eq!(plan.settings().jobs, Some(3));
    assert_eq!(payload(&plan, 0), json!({"name": "a"}));
    assert_eq!(payload(&plan, 1), json!({"name": "d"}));
    assert_eq!(payload(&plan, 2), json!({"name": "c"}));
}

#[test]
fn without_jobs_and_without_csv_rows_the_job_count_is_asked_for() {
    let message = "the number of jobs is not set and data_job.csv has no rows: set \
                   run_message.jobs or override the run's job count";
    let expected = vec![diagnostic(
        TEMPLATE,
        None,
        None,
        Some("run_message.jobs"),
        message,
    )];
    let template = r#"{"run_message": {"agents": 1}}"#;
    assert_eq!(problems(&project(template)), expected);
    assert_eq!(
        problems(&with_job_csv(project(template), "targetted_job,name\n")),
        expected
    );
}

// ---------------------------------------------------------------------------------------------
// Bad CSV input

#[test]
fn an_index_out_of_range_is_located_on_its_line_counting_multiline_cells() {
    let files = with_job_csv(
        project(&jobs_template(2, &json!({}))),
        "targetted_job,name\n0,\"multi\nline\"\n2,b\n1,c\n",
    );
    assert_eq!(
        problems(&files),
        vec![diagnostic(
            JOB_CSV,
            Some(4),
            Some(1),
            Some("targetted_job"),
            "job 2 is out of range: the run has 2 jobs (indexes 0 to 1); raise `jobs` \
             (run_message.jobs or its run override) or remove the row",
        )]
    );
    let files = with_agent_csv(
        project(r#"{"run_message": {"agents": 2, "jobs": 1}}"#),
        "targetted_agent,name\n5,x\n",
    );
    assert_eq!(
        problems(&files),
        vec![diagnostic(
            AGENT_CSV,
            Some(2),
            Some(1),
            Some("targetted_agent"),
            "agent 5 is out of range: the run has 2 agents (indexes 0 to 1); raise `agents` \
             (run_message.agents or its run override) or remove the row",
        )]
    );
}

#[test]
fn a_duplicate_index_mentions_both_lines() {
    let files = with_job_csv(
        project(&jobs_template(3, &json!({}))),
        "targetted_job,name\n0,a\n1,b\n0,c\n",
    );
    assert_eq!(
        problems(&files),
        vec![diagnostic(
            JOB_CSV,
            Some(4),
            Some(1),
            Some("targetted_job"),
            "index 0 is targeted twice (lines 2 and 4)",
        )]
    );
}

#[test]
fn a_non_integer_index_is_located() {
    let files = with_job_csv(
        project(&jobs_template(3, &json!({}))),
        "targetted_job,name\nx,a\n-1,b\n1.5,c\n,d\n",
    );
    let not_an_index = |line: u64, raw: &str| {
        diagnostic(
            JOB_CSV,
            Some(line),
            Some(1),
            Some("targetted_job"),
            &format!("`{raw}` is not an index: use a whole number from 0"),
        )
    };
    assert_eq!(
        problems(&files),
        vec![
            not_an_index(2, "x"),
            not_an_index(3, "-1"),
            not_an_index(4, "1.5"),
            not_an_index(5, ""),
        ]
    );
}

#[test]
fn a_wrong_first_column_is_reported_once_at_line_1_column_1() {
    let files = with_job_csv(
        project(&jobs_template(1, &json!({}))),
        "job,name\n0,a\n0,b\n",
    );
    assert_eq!(
        problems(&files),
        vec![diagnostic(
            JOB_CSV,
            Some(1),
            Some(1),
            None,
            "the first column must be `targetted_job` (the index each row targets), found `job`",
        )]
    );
    let files = with_agent_csv(
        project(r#"{"run_message": {"agents": 1, "jobs": 1}}"#),
        "targetted_job,name\n0,a\n",
    );
    assert_eq!(
        problems(&files),
        vec![diagnostic(
            AGENT_CSV,
            Some(1),
            Some(1),
            None,
            "the first column must be `targetted_agent` (the index each row targets), found \
             `targetted_job`",
        )]
    );
}

#[test]
fn an_empty_header_segment_is_located_by_column() {
    let files = with_job_csv(
        project(&jobs_template(1, &json!({}))),
        "targetted_job,ok,proxy.,,.x\n0,1,2,3,4\n",
    );
    let bad_header = |column: u64, header: &str| {
        diagnostic(
            JOB_CSV,
            Some(1),
            Some(column),
            None,
            &format!(
                "header `{header}` is not a key: use a name, or dotted names for nested keys \
                 (`proxy.server`)"
            ),
        )
    };
    assert_eq!(
        problems(&files),
        vec![
            bad_header(3, "proxy."),
            bad_header(4, ""),
            bad_header(5, ".x")
        ]
    );
}

#[test]
fn invalid_json_in_a_cell_is_located_by_line_column_and_header() {
    let files = with_job_csv(
        project(&jobs_template(2, &json!({}))),
        "targetted_job,name,proxy.opts\n0,a,{}\n1,b,\"{\"\"a\"\":}\"\n",
    );
    assert_eq!(
        problems(&files),
        vec![diagnostic(
            JOB_CSV,
            Some(3),
            Some(3),
            Some("proxy.opts"),
            "the cell starts like JSON but is not valid JSON (expected value at line 1 column \
             6); quote the whole cell in the CSV and double its inner quotes",
        )]
    );
    let files = with_job_csv(
        project(&jobs_template(1, &json!({}))),
        "targetted_job,list\n0,  [1 2]\n",
    );
    assert_eq!(
        problems(&files),
        vec![diagnostic(
            JOB_CSV,
            Some(2),
            Some(2),
            Some("list"),
            "the cell starts like JSON but is not valid JSON (expected `,` or `]` at line 1 \
             column 4); quote the whole cell in the CSV and double its inner quotes",
        )]
    );
}

#[test]
fn unquoted_json_with_commas_gives_the_row_length_error_with_the_quoting_hint() {
    let files = with_job_csv(
        project(&jobs_template(3, &json!({}))),
        "targetted_job,opts\n0,{\"a\": 1, \"b\": 2}\n1,x,y\n2\n",
    );
    assert_eq!(
        problems(&files),
        vec![
            diagnostic(
                JOB_CSV,
                Some(2),
                None,
                None,
                "the header has 2 columns but this row has 3; a JSON cell that contains commas \
                 must be quoted: \"{\"\"key\"\": 1, \"\"other\"\": 2}\"",
            ),
            diagnostic(
                JOB_CSV,
                Some(3),
                None,
                None,
                "the header has 2 columns but this row has 3",
            ),
            diagnostic(
                JOB_CSV,
                Some(4),
                None,
                None,
                "the header has 2 columns but this row has 1",
            ),
        ]
    );
}

#[test]
fn invalid_utf8_in_a_cell_is_located() {
    let mut files = project(&jobs_template(2, &json!({})));
    files.job_csv = Some(NamedFile::new(
        JOB_CSV,
        b"targetted_job,a,b\n0,x,y\n1,ok,\xff\xfe\n".to_vec(),
    ));
    assert_eq!(
        problems(&files),
        vec![diagnostic(
            JOB_CSV,
            Some(3),
            Some(3),
            None,
            "the cell is not valid UTF-8 text",
        )]
    );
}

#[test]
fn at_most_50_problems_per_file_are_listed_then_counted() {
    let mut csv = String::from("targetted_job,name\n");
    for row in 0..60 {
        csv.push_str(&format!("bad{row},x\n"));
    }
    let files = with_job_csv(project(&jobs_template(1, &json!({}))), &csv);
    let Err(crate::Error::Invalid(diagnostics)) =
        Plan::build::<Value, Value>(&files, &RunOverrides::default())
    else {
        panic!("60 bad rows must not build");
    };
    assert_eq!(diagnostics.len(), 51);
    let mut lines: Vec<u64> = diagnostics.iter().filter_map(|d| d.line).collect();
    lines.sort_unstable();
    assert_eq!(
        lines,
        (2..=51).collect::<Vec<u64>>(),
        "the first 50 rows are listed"
    );
    let summaries: Vec<&Diagnostic> = diagnostics.iter().filter(|d| d.line.is_none()).collect();
    assert_eq!(
        summaries,
        vec![&diagnostic(
            JOB_CSV,
            None,
            None,
            None,
            "10 more problems in this file are not shown"
        )]
    );
}

// ---------------------------------------------------------------------------------------------
// Bad template input

#[test]
fn invalid_json_in_the_template_is_located_by_line_and_column() {
    let files = project("{\n  \"run_message\": {\"agents\": 1,}\n}");
    assert_eq!(
        problems(&files),
        vec![diagnostic(
            TEMPLATE,
            Some(2),
            Some(31),
            None,
            "invalid JSON: trailing comma at line 2 column 31",
        )]
    );
    // Columns are 1-based: an empty file's error is at its first character.
    assert_eq!(
        problems(&project("")),
        vec![diagnostic(
            TEMPLATE,
            Some(1),
            Some(1),
            None,
            "invalid JSON: EOF while parsing a value at line 1 column 0",
        )]
    );
    assert_eq!(
        problems(&project("\"text\"")),
        vec![diagnostic(
            TEMPLATE,
            None,
            None,
            None,
            "must hold a JSON object, found a string"
        )]
    );
}

#[test]
fn json_columns_count_characters_not_bytes() {
    // `Diagnostic::column` is "a character in a JSON file": an editor shows `x` in column 9.
    let files = project("{\"\u{e9}\u{e9}\u{e9}\": x}");
    let found = problems(&files);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        (found[0].line, found[0].column),
        (Some(1), Some(9)),
        "{found:?}"
    );
}

#[test]
fn unknown_keys_in_the_template_and_in_run_message_are_named() {
    let files = project(
        r#"{"run_message": {"agents": 1, "jobs": 1, "agentz": 2}, "default_job_mesage": {}}"#,
    );
    assert_eq!(
        problems(&files),
        vec![
            diagnostic(
                TEMPLATE,
                None,
                None,
                Some("default_job_mesage"),
                "unknown key `default_job_mesage`: the template holds run_message, \
                 default_agent_message, default_job_message",
            ),
            diagnostic(
                TEMPLATE,
                None,
                None,
                Some("run_message.agentz"),
                "unknown field `agentz`, expected one of `agents`, `jobs`, `max_attempts`, \
                 `job_timeout_secs`, `retry_backoff_secs`, `retry_backoff_max_secs`, `image`, \
                 `resources`, `kubernetes`",
            ),
        ]
    );
}

#[test]
fn template_sections_must_be_objects() {
    let files =
        project(r#"{"run_message": [1], "default_agent_message": "x", "default_job_message": 3}"#);
    assert_eq!(
        problems(&files),
        vec![
            diagnostic(
                TEMPLATE,
                None,
                None,
                Some("default_agent_message"),
                "must be an object, found a string",
            ),
            diagnostic(
                TEMPLATE,
                None,
                None,
                Some("default_job_message"),
                "must be an object, found a number",
            ),
            diagnostic(
                TEMPLATE,
                None,
                None,
                Some("run_message"),
                "must be an object, found an array"
            ),
        ]
    );
}

#[test]
fn run_settings_that_parse_but_make_no_sense_are_each_reported() {
    let files = project(
        r#"{"run_message": {"agents": 0, "jobs": 1, "max_attempts": 0, "job_timeout_secs": 0,
            "retry_backoff_secs": -1, "retry_backoff_max_secs": 1e10}}"#,
    );
    assert_eq!(
        problems(&files),
        vec![
            diagnostic(
                TEMPLATE,
                None,
                None,
                Some("run_message.agents"),
                "must be at least 1"
            ),
            diagnostic(
                TEMPLATE,
                None,
                None,
                Some("run_message.job_timeout_secs"),
                "0 is not a usable number of seconds",
            ),
            diagnostic(
                TEMPLATE,
                None,
                None,
                Some("run_message.max_attempts"),
                "must be at least 1"
            ),
            diagnostic(
                TEMPLATE,
                None,
                None,
                Some("run_message.retry_backoff_max_secs"),
                "10000000000 is not a usable number of seconds",
            ),
            diagnostic(
                TEMPLATE,
                None,
                None,
                Some("run_message.retry_backoff_secs"),
                "-1 is not a usable number of seconds",
            ),
        ]
    );
}

#[test]
fn run_message_types_and_missing_agents_are_located() {
    assert_eq!(
        problems(&project(r#"{"run_message": {"jobs": 1}}"#)),
        vec![diagnostic(
            TEMPLATE,
            None,
            None,
            Some("run_message"),
            "missing field `agents`"
        )]
    );
    assert_eq!(
        problems(&project(r#"{"run_message": {"agents": "two", "jobs": 1}}"#)),
        vec![diagnostic(
            TEMPLATE,
            None,
            None,
            Some("run_message.agents"),
            "invalid type: string \"two\", expected u32",
        )]
    );
}

// ---------------------------------------------------------------------------------------------
// Typed validation of merged messages

#[derive(Debug, Deserialize)]
#[allow(dead_code, reason = "only deserialization is checked")]
struct Payload {
    nested: Nested,
    name: String,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code, reason = "only deserialization is checked")]
struct Nested {
    count: u32,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code, reason = "only deserialization is checked")]
struct AgentConfig {
    port: u16,
}

#[test]
fn a_merged_row_that_does_not_deserialize_names_the_row_and_the_field_path() {
    let files = with_job_csv(
        project(&jobs_template(
            3,
            &json!({"nested": {"count": 1}, "name": "n"}),
        )),
        "targetted_job,nested.count\n0,3\n1,many\n",
    );
    assert_eq!(
        problems_of(Plan::build::<Value, Payload>(
            &files,
            &RunOverrides::default()
        )),
        vec![diagnostic(
            JOB_CSV,
            Some(3),
            None,
            Some("nested.count"),
            "job 1: invalid type: string \"many\", expected u32",
        )]
    );
}

#[test]
fn a_number_where_text_is_expected_gets_the_quoting_hint() {
    let files = with_job_csv(
        project(&jobs_template(
            1,
            &json!({"nested": {"count": 1}, "name": "n"}),
        )),
        "targetted_job,name\n0,75001\n",
    );
    assert_eq!(
        problems_of(Plan::build::<Value, Payload>(
            &files,
            &RunOverrides::default()
        )),
        vec![diagnostic(
            JOB_CSV,
            Some(2),
            None,
            Some("name"),
            "job 0: invalid type: integer `75001`, expected a string; a CSV cell that looks like \
             a number is read as one: write it as a JSON string, \"\"\"75001\"\"\"",
        )]
    );
}

#[test]
fn an_invalid_default_message_is_reported_only_when_a_job_uses_it() {
    let template = jobs_template(3, &json!({"nested": {"count": "x"}, "name": "n"}));
    let files = with_job_csv(project(&template), "targetted_job,nested.count\n0,5\n");
    assert_eq!(
        problems_of(Plan::build::<Value, Payload>(
            &files,
            &RunOverrides::default()
        )),
        vec![diagnostic(
            TEMPLATE,
            None,
            None,
            Some("default_job_message.nested.count"),
            "invalid type: string \"x\", expected u32 (the default job message, used by 2 jobs \
             without a CSV row)",
        )]
    );
    // Every job has a row that fixes the default: nothing uses the invalid default.
    let overrides = RunOverrides {
        jobs: Some(1),
        ..RunOverrides::default()
    };
    let plan = Plan::build::<Value, Payload>(&files, &overrides);
    assert!(plan.is_ok(), "{plan:?}");

    let files = project(r#"{"run_message": {"agents": 2, "jobs": 1}}"#);
    assert_eq!(
        problems_of(Plan::build::<AgentConfig, Value>(
            &files,
            &RunOverrides::default()
        )),
        vec![diagnostic(
            TEMPLATE,
            None,
            None,
            Some("default_agent_message"),
            "missing field `port` (the default agent message, used by 2 agents without a CSV \
             row)",
        )]
    );
}

#[test]
fn problems_across_files_are_all_reported_together() {
    let files = with_job_csv(
        with_agent_csv(
            with_tune(
                project(
                    r#"{"run_message": {"agents": 2, "jobs": 3},
                        "default_agent_message": {"key": "$env_KEY"},
                        "extra": 1}"#,
                ),
                "{}",
            ),
            "agent,name\n0,a\n",
        ),
        "targetted_job,opts\n0,{oops}\n7,x\n1,x\n1,y\n",
    );
    let result = Plan::build::<Value, Value>(&files, &RunOverrides::default());
    let text = match &result {
        Err(error) => error.to_string(),
        Ok(plan) => panic!("must not build: {plan:?}"),
    };
    assert!(
        text.starts_with("the project has 6 problems; nothing was launched:\n  - "),
        "{text}"
    );
    let found = problems_of(result);
    let located: Vec<Location<'_>> = found
        .iter()
        .map(|d| (d.file.as_str(), d.line, d.column, d.field.as_deref()))
        .collect();
    assert_eq!(
        located,
        vec![
            (TEMPLATE, None, None, Some("default_agent_message.key")),
            (TEMPLATE, None, None, Some("extra")),
            (AGENT_CSV, Some(1), Some(1), None),
            (JOB_CSV, Some(2), Some(2), Some("opts")),
            (JOB_CSV, Some(3), Some(1), Some("targetted_job")),
            (JOB_CSV, Some(5), Some(1), Some("targetted_job")),
        ]
    );
}

#[test]
fn rows_are_checked_even_when_run_message_is_invalid() {
    let files = with_job_csv(
        project(
            r#"{"run_message": {"agents": 0, "jobs": 1},
                    "default_job_message": {"nested": {"count": 1}, "name": "n"}}"#,
        ),
        "targetted_job,nested.count\n0,many\n",
    );
    assert_eq!(
        problems_of(Plan::build::<Value, Payload>(
            &files,
            &RunOverrides::default()
        )),
        vec![
            diagnostic(
                TEMPLATE,
                None,
                None,
                Some("run_message.agents"),
                "must be at least 1"
            ),
            diagnostic(
                JOB_CSV,
                Some(2),
                None,
                Some("nested.count"),
                "job 0: invalid type: string \"many\", expected u32",
            ),
        ]
    );
}

#[test]
fn a_run_without_jobs_has_no_valid_index() {
    let files = with_job_csv(
        project(&jobs_template(0, &json!({}))),
        "targetted_job,name\n0,a\n",
    );
    let found = problems(&files);
    assert_eq!(found.len(), 1, "{found:?}");
    let only = &found[0];
    assert_eq!(
        (
            only.file.as_str(),
            only.line,
            only.column,
            only.field.as_deref()
        ),
        (JOB_CSV, Some(2), Some(1), Some("targetted_job"))
    );
    assert!(
        only.message
            .starts_with("job 0 is out of range: the run has 0 jobs"),
        "{}",
        only.message
    );
    assert!(
        !only.message.contains("indexes 0 to 0"),
        "a run of 0 jobs has no index 0: {}",
        only.message
    );
}

#[test]
fn the_job_count_from_csv_rows_counts_rows_that_have_problems() {
    // Two rows, so two jobs: the only problem is the bad cell of row 0, not a bogus "job 1 is
    // out of range: the run has 1 jobs".
    let files = with_job_csv(
        project(r#"{"run_message": {"agents": 1}}"#),
        "targetted_job,opts\n0,{bad\n1,2\n",
    );
    assert_eq!(
        problems(&files),
        vec![diagnostic(
            JOB_CSV,
            Some(2),
            Some(2),
            Some("opts"),
            "the cell starts like JSON but is not valid JSON (key must be a string at line 1 \
             column 2); quote the whole cell in the CSV and double its inner quotes",
        )]
    );
}

// ---------------------------------------------------------------------------------------------
// Run overrides and accessors

#[test]
fn run_overrides_take_precedence_over_run_message() {
    let files = with_job_csv(
        project(
            r#"{"run_message": {"agents": 0, "jobs": 1, "max_attempts": 2,
                "job_timeout_secs": 10, "retry_backoff_secs": 4, "image": "img:1"}}"#,
        ),
        "targetted_job,a\n0,x\n1,y\n4,z\n",
    );
    let overrides = RunOverrides {
        agents: Some(4),
        jobs: Some(7),
        max_attempts: Some(5),
        job_timeout_secs: Some(2.5),
    };
    let plan = match Plan::build::<Value, Value>(&files, &overrides) {
        Ok(plan) => plan,
        Err(error) => panic!("overrides fix the template: {error}"),
    };
    assert_eq!(
        plan.settings(),
        &RunSettings {
            agents: 4,
            jobs: Some(7),
            max_attempts: 5,
            job_timeout_secs: 2.5,
            retry_backoff_secs: 4.0,
            retry_backoff_max_secs: 60.0,
            image: Some("img:1".to_owned()),
            resources: None,
            kubernetes: None,
        }
    );
    assert_eq!(plan.agents(), 4);
    assert_eq!(plan.jobs(), 7);
    assert_eq!(
        crate::wire::JobLimits::from_settings(plan.settings(), plan.jobs()).job_timeout(),
        std::time::Duration::from_millis(2500)
    );
    assert_eq!(payload(&plan, 4), json!({"a": "z"}));

    // An override is validated like the template value it replaces.
    let overrides = RunOverrides {
        agents: Some(0),
        ..RunOverrides::default()
    };
    assert_eq!(
        problems_of(Plan::build::<Value, Value>(
            &project(r#"{"run_message": {"agents": 3, "jobs": 1}}"#),
            &overrides
        )),
        vec![diagnostic(
            TEMPLATE,
            None,
            None,
            Some("run_message.agents"),
            "must be at least 1"
        )]
    );
}

#[test]
fn run_settings_defaults() {
    let plan = plan(&project(r#"{"run_message": {"agents": 1, "jobs": 0}}"#));
    assert_eq!(
        plan.settings(),
        &RunSettings {
            agents: 1,
            jobs: Some(0),
            max_attempts: 3,
            job_timeout_secs: 300.0,
            retry_backoff_secs: 1.0,
            retry_backoff_max_secs: 60.0,
            image: None,
            resources: None,
            kubernetes: None,
        }
    );
    assert_eq!(plan.jobs(), 0);
    let parsed: RunSettings = serde_json::from_value(json!({ "agents": 1 })).unwrap();
    assert_eq!(RunSettings::new(1), parsed);
}

#[test]
fn plan_accessors_and_json_lines() {
    let files = with_job_csv(
        with_agent_csv(
            project(
                r#"{"run_message": {"agents": 2, "jobs": 3},
                    "default_agent_message": {"proxy": {"server": "d", "port": 1}},
                    "default_job_message": {"url": "https://d"}}"#,
            ),
            "targetted_agent,proxy.server\n1,p1\n",
        ),
        "targetted_job,url\n1,https://one\n",
    );
    let plan = plan(&files);
    assert_eq!(plan.agents(), 2);
    assert_eq!(plan.jobs(), 3);
    assert_eq!(
        plan.agent_message(0),
        &json!({"proxy": {"server": "d", "port": 1}})
    );
    assert_eq!(
        plan.agent_message(1),
        &json!({"proxy": {"server": "p1", "port": 1}})
    );
    assert_eq!(payload(&plan, 0), json!({"url": "https://d"}));
    assert_eq!(payload(&plan, 1), json!({"url": "https://one"}));
    assert!(Arc::ptr_eq(plan.job_payload(0), plan.job_payload(2)));

    let mut out = Vec::new();
    plan.write_json_lines(&mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.ends_with('\n'));
    let lines: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(
        lines,
        vec![
            json!({"agent": 0, "message": {"proxy": {"server": "d", "port": 1}}}),
            json!({"agent": 1, "message": {"proxy": {"server": "p1", "port": 1}}}),
            json!({"job": 0, "message": {"url": "https://d"}}),
            json!({"job": 1, "message": {"url": "https://one"}}),
            json!({"job": 2, "message": {"url": "https://d"}}),
        ]
    );
}

#[test]
#[should_panic(expected = "index out of bounds")]
fn agent_message_panics_past_the_last_agent() {
    let plan = plan(&project(r#"{"run_message": {"agents": 1, "jobs": 1}}"#));
    let _ = plan.agent_message(1);
}

#[test]
fn deep_merge_merges_objects_and_replaces_everything_else() {
    let mut base = json!({"a": {"b": 1, "c": [1, 2]}, "d": 1});
    super::deep_merge(
        &mut base,
        json!({"a": {"c": [3], "e": null}, "d": {"x": 1}}),
    );
    assert_eq!(
        base,
        json!({"a": {"b": 1, "c": [3], "e": null}, "d": {"x": 1}})
    );
    let mut scalar = json!(1);
    super::deep_merge(&mut scalar, json!({"k": 2}));
    assert_eq!(scalar, json!({"k": 2}));
}

// ---------------------------------------------------------------------------------------------
// Plans from messages made in code

#[derive(Debug, Deserialize)]
#[allow(dead_code)] // Only checked against, never read.
struct Page {
    url: String,
}

fn from_values(settings: RunSettings, agents: Vec<Value>, jobs: Vec<Value>) -> crate::Result<Plan> {
    super::messages::from_values::<Value, Page>(settings, agents, jobs)
}

#[test]
fn messages_in_code_make_a_plan_sharing_equal_payloads() {
    let page = |url: &str| json!({ "url": url });
    let jobs = vec![page("a"), page("b"), page("a"), page("c")];
    let plan = from_values(RunSettings::new(3), vec![json!({ "n": 1 })], jobs).unwrap();
    assert_eq!((plan.agents(), plan.jobs()), (3, 4));
    assert!((0..3).all(|index| plan.agent_message(index) == &json!({ "n": 1 })));
    let payloads: Vec<Value> = (0..4).map(|index| payload(&plan, index)).collect();
    assert_eq!(payloads, [page("a"), page("b"), page("a"), page("c")]);
    assert!(Arc::ptr_eq(plan.job_payload(0), plan.job_payload(2)));

    let shared = RunSettings {
        jobs: Some(1000),
        ..RunSettings::new(2)
    };
    let agents = vec![json!({ "n": 1 }), json!({ "n": 2 })];
    let plan = from_values(shared, agents, vec![page("x")]).unwrap();
    assert_eq!(plan.jobs(), 1000);
    assert_eq!(plan.agent_message(1), &json!({ "n": 2 }));
    assert!(Arc::ptr_eq(plan.job_payload(0), plan.job_payload(999)));
}

#[test]
fn every_problem_with_messages_in_code_is_reported_with_its_field() {
    let settings = RunSettings {
        jobs: Some(3),
        max_attempts: 0,
        ..RunSettings::new(2)
    };
    let agents = vec![json!({}), json!({}), json!({})];
    let jobs = vec![
        json!({ "url": "a" }),
        json!({ "url": 7 }),
        json!({}),
        json!({ "url": "d" }),
    ];
    let found = problems_of(from_values(settings, agents, jobs));
    let at = |field: &str| {
        found
            .iter()
            .find(|problem| problem.field.as_deref() == Some(field))
            .unwrap_or_else(|| panic!("no problem at {field}: {found:?}"))
    };
    assert_eq!(found.len(), 5, "{found:?}");
    assert!(
        found
            .iter()
            .all(|problem| problem.file == "(in code)" && problem.line.is_none())
    );
    assert!(at("settings.max_attempts").message.contains("at least 1"));
    assert!(
        at("agents")
            .message
            .contains("3 agent configs for 2 agents")
    );
    assert!(at("jobs").message.contains("4 payloads for 3 jobs"));
    assert!(at("jobs[1].url").message.contains("expected a string"));
    assert!(at("jobs[2]").message.contains("missing field `url`"));

    for jobs in [None, Some(5)] {
        let settings = RunSettings {
            jobs,
            ..RunSettings::new(1)
        };
        let found = problems_of(from_values(settings, vec![json!({})], Vec::new()));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].message.starts_with("no job payload"), "{found:?}");
    }
    let empty = RunSettings {
        jobs: Some(0),
        ..RunSettings::new(1)
    };
    assert_eq!(
        from_values(empty, vec![json!({})], Vec::new())
            .unwrap()
            .jobs(),
        0
    );
}

// ---------------------------------------------------------------------------------------------
// Keys no type reads

#[derive(Debug, Deserialize)]
#[allow(dead_code, reason = "only deserialization is checked")]
struct Greeting {
    name: String,
    work_ms: u64,
    #[serde(default)]
    style: Option<Style>,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code, reason = "only deserialization is checked")]
struct Style {
    #[serde(default)]
    uppercase: bool,
}

/// A payload that takes any other key, in a map of its own.
#[derive(Debug, Deserialize)]
#[allow(dead_code, reason = "only deserialization is checked")]
struct Open {
    name: String,
    #[serde(flatten)]
    rest: serde_json::Map<String, Value>,
}

fn greeting_problems(files: &ProjectFiles) -> Vec<Diagnostic> {
    problems_of(Plan::build::<Value, Greeting>(
        files,
        &RunOverrides::default(),
    ))
}

#[test]
fn a_misspelled_csv_column_is_an_error_naming_its_column_and_the_key_meant() {
    let files = with_job_csv(
        project(&jobs_template(3, &json!({ "name": "x", "work_ms": 5 }))),
        "targetted_job,work_ms,nmae\n0,1,ann\n1,2,bob\n",
    );
    assert_eq!(
        greeting_problems(&files),
        [diagnostic(
            JOB_CSV,
            Some(1),
            Some(3),
            Some("nmae"),
            "`nmae` is not a field of the job payload; did you mean `name`?",
        )],
        "reported once, not once per row"
    );
}

#[test]
fn a_misspelled_template_key_is_an_error_at_its_field() {
    let files = project(&jobs_template(
        2,
        &json!({
            "name": "x", "work_ms": 5, "wrok_ms": 50,
            "style": { "upercase": true, "colour": "red" }
        }),
    ));
    assert_eq!(
        greeting_problems(&files),
        [
            diagnostic(
                TEMPLATE,
                None,
                None,
                Some("default_job_message.style.colour"),
                "`colour` is not a field of the job payload; nothing reads it (remove it, or \
                 add the field to the script's type)",
            ),
            // Known from the type, inside an `Option`, though the message has no such key.
            diagnostic(
                TEMPLATE,
                None,
                None,
                Some("default_job_message.style.upercase"),
                "`upercase` is not a field of the job payload; did you mean `uppercase`?",
            ),
            diagnostic(
                TEMPLATE,
                None,
                None,
                Some("default_job_message.wrok_ms"),
                "`wrok_ms` is not a field of the job payload; did you mean `work_ms`?",
            ),
        ]
    );
}

#[test]
fn a_type_that_reads_every_key_takes_extra_ones() {
    let files = with_job_csv(
        project(&jobs_template(2, &json!({ "name": "x", "anything": 1 }))),
        "targetted_job,more\n0,2\n",
    );
    Plan::build::<Value, Open>(&files, &RunOverrides::default()).unwrap();
    // `Value` reads everything, and the default agent config (`IgnoredAny`) takes anything.
    Plan::build::<serde::de::IgnoredAny, Value>(&files, &RunOverrides::default()).unwrap();
}

#[test]
fn messages_made_in_code_are_held_to_their_type_too() {
    let error = super::messages::from_values::<serde::de::IgnoredAny, Greeting>(
        RunSettings::new(1),
        vec![json!({})],
        vec![
            json!({ "name": "a", "work_ms": 1 }),
            json!({ "name": "b", "work_ms": 1, "nmae": "c" }),
            json!({ "name": "d", "work_ms": 1, "nmae": "e" }),
        ],
    );
    assert_eq!(
        problems_of(error),
        [diagnostic(
            "(in code)",
            None,
            None,
            Some("jobs[1].nmae"),
            "`nmae` is not a field of the job payload; did you mean `name`?",
        )]
    );
}
