//! `POST /projects/{id}/shell`, as one matrix over both executors (and both databases).

use serde_json::json;

use crate::{
    on_every_backend,
    support::{Backend, TestApp, survivors_of},
};

on_every_backend!(
    runs_a_command_and_returns_its_output,
    non_zero_exit_is_still_200,
    stderr_is_kept_apart_from_stdout,
    timeout_kills_the_whole_process_group,
    output_past_the_cap_is_truncated_while_the_command_finishes,
    ten_mib_of_lines_keep_exactly_their_first_and_last_two_kib,
    env_and_workdir_apply,
    workdir_that_does_not_exist_is_a_validation_error,
    every_execution_writes_an_audit_row,
);

async fn runs_a_command_and_returns_its_output(backend: Backend) {
    let app = TestApp::on(backend).await;
    let reply = app.shell("hello", json!({"command": "echo hello"})).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["exit_code"], 0);
    assert_eq!(reply.body["stdout"], "hello\n");
    assert_eq!(reply.body["stderr"], "");
    assert_eq!(reply.body["timed_out"], false);
    assert_eq!(reply.body["project_id"], "hello");
    assert_eq!(reply.body["command"], "echo hello");
    assert!(
        reply.body["execution_id"].is_string()
            && reply.body["started_at"].is_string()
            && reply.body["duration_ms"].is_u64()
    );
    assert!(reply.headers.contains_key("x-request-id"));
}

async fn non_zero_exit_is_still_200(backend: Backend) {
    let app = TestApp::on(backend).await;
    let reply = app.shell("hello", json!({"command": "echo before; exit 3"})).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body["exit_code"], 3);
    assert_eq!(reply.body["stdout"], "before\n");
}

async fn stderr_is_kept_apart_from_stdout(backend: Backend) {
    let app = TestApp::on(backend).await;
    let reply = app.shell("hello", json!({"command": "echo out; echo err >&2; echo out2"})).await;
    assert_eq!(reply.body["stdout"], "out\nout2\n");
    assert_eq!(reply.body["stderr"], "err\n");
}

async fn timeout_kills_the_whole_process_group(backend: Backend) {
    let app = TestApp::on(backend).await;
    // A unique duration marks this test's processes in /proc.
    let marker = format!("300.{}", rand_digits());
    let command = format!("echo started; sleep {marker} & sleep {marker}");
    let reply = app.shell("hello", json!({"command": command, "timeout_secs": 1})).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["timed_out"], true);
    assert_eq!(reply.body["exit_code"], 128 + 9, "killed by SIGKILL");
    assert_eq!(reply.body["stdout"], "started\n", "output before the timeout is kept");
    app.commands_settled().await;
    assert_eq!(
        survivors_of(&marker).await,
        Vec::<u32>::new(),
        "no process of the command survives, background job included"
    );
}

async fn output_past_the_cap_is_truncated_while_the_command_finishes(backend: Backend) {
    let app = TestApp::on(backend).configure(|config| config.executor.max_output_bytes = 1000).await;
    let reply = app
        .shell(
            "hello",
            json!({"command": "head -c 100000 /dev/zero | tr '\\0' a; printf END; echo finished >&2; echo -n ok > done.txt"}),
        )
        .await;
    assert_eq!(reply.status, 200);
    let (head, tail) = ("a".repeat(500), format!("{}END", "a".repeat(497)));
    assert_eq!(reply.body["stdout"].as_str().unwrap(), format!("{head}{tail}"), "the first and last halves");
    assert_eq!(reply.body["stdout_truncated"], true);
    assert_eq!(reply.body["stdout_omitted"], json!({"offset": 500, "bytes": 100_003 - 1000}));
    assert_eq!(reply.body["stderr"], "finished\n");
    assert_eq!(reply.body["stderr_truncated"], false);
    assert_eq!(reply.body["stderr_omitted"], json!(null));
    assert_eq!(reply.body["exit_code"], 0);
    assert_eq!(std::fs::read_to_string(app.project_path("hello").join("done.txt")).unwrap(), "ok", "ran to completion");
}

/// `seq -w` prints 1,310,720 lines of 8 bytes: exactly 10 MiB, so every kept byte is known.
async fn ten_mib_of_lines_keep_exactly_their_first_and_last_two_kib(backend: Backend) {
    let app = TestApp::on(backend).await;
    let reply = app.shell("hello", json!({"command": "seq -w 1 1310720", "max_output_bytes": 4096})).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let lines = |from: u32, to: u32| (from..=to).map(|n| format!("{n:07}\n")).collect::<String>();
    let stdout = reply.body["stdout"].as_str().unwrap();
    assert_eq!(stdout.len(), 4096);
    assert_eq!(&stdout[..2048], lines(1, 256), "the first 2048 bytes");
    assert_eq!(&stdout[2048..], lines(1_310_465, 1_310_720), "the last 2048 bytes");
    assert_eq!(reply.body["stdout_omitted"], json!({"offset": 2048, "bytes": 10 * 1024 * 1024 - 4096}));
    let too_small = app.shell("hello", json!({"command": "true", "max_output_bytes": 1023})).await;
    assert_eq!(too_small.field_error("max_output_bytes"), Some("must be between 1024 and 1048576"));
}

async fn env_and_workdir_apply(backend: Backend) {
    let app = TestApp::on(backend).await;
    std::fs::create_dir_all(app.project_path("hello").join("sub/dir")).unwrap();
    let reply = app.shell("hello", json!({"command": "pwd; echo \"$FOO $BAR\"", "workdir": "sub/./dir", "env": {"FOO": "foo value", "BAR": "it's \"quoted\""}})).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let stdout = reply.body["stdout"].as_str().unwrap();
    let expected_dir = std::fs::canonicalize(app.project_path("hello").join("sub/dir")).unwrap();
    assert_eq!(stdout, format!("{}\nfoo value it's \"quoted\"\n", expected_dir.display()));
}

async fn workdir_that_does_not_exist_is_a_validation_error(backend: Backend) {
    let app = TestApp::on(backend).await;
    let reply = app.shell("hello", json!({"command": "true", "workdir": "missing"})).await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.error_code(), "VALIDATION_FAILED");
    assert!(reply.field_error("workdir").is_some(), "{}", reply.body);
    if backend == Backend::Kubernetes {
        return; // In a pod the container is the boundary; a symlink to / is its own business.
    }
    // A symlink pointing out of the project is refused too.
    std::os::unix::fs::symlink("/tmp", app.project_path("hello").join("out")).unwrap();
    let reply = app.shell("hello", json!({"command": "true", "workdir": "out"})).await;
    assert_eq!(reply.field_error("workdir"), Some("must not escape the project"));
}

async fn every_execution_writes_an_audit_row(backend: Backend) {
    let app = TestApp::on(backend).await;
    let ok = app.shell("hello", json!({"command": "true"})).await;
    let failed = app.shell("hello", json!({"command": "exit 2"})).await;
    let timed_out = app.shell("hello", json!({"command": "sleep 5", "timeout_secs": 1})).await;
    let missing = app.shell("nope", json!({"command": "true"})).await;
    assert_eq!(missing.status, 404);

    let audit = app.get("/audit", &app.admin_key).await;
    assert_eq!(audit.status, 200, "{}", audit.body);
    let entries = audit.body["entries"].as_array().unwrap();
    let outcomes: Vec<_> = entries.iter().map(|e| e["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["rejected", "timed_out", "failed", "succeeded"], "newest first");
    assert_eq!(entries[3]["id"], ok.body["execution_id"], "the row is the execution");
    assert_eq!(entries[2]["exit_code"], 2);
    assert_eq!(entries[2]["id"], failed.body["execution_id"]);
    assert_eq!(entries[1]["id"], timed_out.body["execution_id"]);
    assert_eq!(entries[0]["project_id"], "nope");
    assert_eq!(entries[3]["command"], "true");
    assert_eq!(entries[3]["client_ip"], "127.0.0.1");
    assert!(
        entries[3]["api_key_id"].is_string()
            && entries[3]["request_id"].is_string()
            && entries[3]["duration_ms"].is_u64()
    );

    // Filters and pagination.
    let hello = app.get("/audit?project_id=hello&limit=2", &app.admin_key).await;
    assert_eq!(hello.body["entries"].as_array().unwrap().len(), 2);
    let cursor = hello.body["next_cursor"].as_str().expect("a second page").to_owned();
    let rest = app.get(&format!("/audit?project_id=hello&limit=2&cursor={cursor}"), &app.admin_key).await;
    assert_eq!(rest.body["entries"].as_array().unwrap().len(), 1);
    assert_eq!(rest.body["entries"][0]["outcome"], "succeeded");
    assert!(rest.body["next_cursor"].is_null());
    let future = app.get("/audit?since=2999-01-01T00:00:00Z", &app.admin_key).await;
    assert_eq!(future.body["entries"].as_array().unwrap().len(), 0);
}

fn rand_digits() -> u32 {
    uuid::Uuid::new_v4().as_u128() as u32 % 1_000_000
}
