//! The Jupyter client against a real Jupyter server running in a SLURM batch job: kernels,
//! every kind of output over the websocket in order, interrupt on timeout, notebooks
//! through the contents API, and paths refused before any request.

mod common;

use std::time::Duration;

use base64::Engine;
use common::{Env, JupyterJob};
use slurmlab::jupyter::{JupyterError, JupyterServer, KernelChannel, Output, notebook};

async fn server(env: &Env) -> (JupyterJob, JupyterServer) {
    let cluster = env.slurm_clusters().into_iter().next().expect("a cluster");
    let job = JupyterJob::start(&cluster).await;
    let server = JupyterServer::new(&job.url, &job.token, Duration::from_secs(30)).unwrap();
    (job, server)
}

#[tokio::test]
async fn execute_returns_every_output_in_order_and_interrupts_on_timeout() {
    let env = Env::load();
    let (job, server) = server(&env).await;
    let (default, names) = server.kernelspecs().await.unwrap();
    assert_eq!(default, "python3");
    assert!(names.contains(&"python3".to_owned()));
    let kernel = server.start_kernel("python3", None).await.unwrap();
    let mut channel = KernelChannel::connect(&server, &kernel.id, None)
        .await
        .unwrap();

    let code = r#"
import sys
# ipykernel buffers each stream separately: flush so the order is the order written.
print("to stdout", flush=True)
print("to stderr", file=sys.stderr, flush=True)
import matplotlib
matplotlib.use("module://matplotlib_inline.backend_inline")
import matplotlib.pyplot as plt
plt.plot([1, 2, 3], [1, 4, 9])
plt.show()
display(6 * 7)
raise ValueError("boom")
"#;
    let exec = channel
        .execute(code, Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(exec.status, "error");
    assert!(!exec.interrupted);
    let kinds: Vec<&str> = exec
        .outputs
        .iter()
        .map(|o| match o {
            Output::Stream { name, .. } if name == "stdout" => "stdout",
            Output::Stream { .. } => "stderr",
            Output::Display { data, .. } if data.contains_key("image/png") => "png",
            Output::Display { .. } => "display",
            Output::Result { .. } => "result",
            Output::Error { .. } => "error",
        })
        .collect();
    assert_eq!(
        kinds,
        ["stdout", "stderr", "png", "display", "error"],
        "{:#?}",
        exec.outputs
    );
    let png = exec.outputs.iter().find_map(|o| match o {
        Output::Display { data, .. } => data
            .get("image/png")
            .and_then(|v| v.as_str())
            .map(str::to_owned),
        _ => None,
    });
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(png.unwrap().trim())
        .expect("base64 PNG");
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "a real PNG");
    assert_eq!(exec.error(), Some(("ValueError", "boom")));
    if let Some(Output::Error { traceback, .. }) = exec.outputs.last() {
        assert!(traceback.iter().any(|l| l.contains("boom")));
    }

    let exec = channel
        .execute("1 + 1", Duration::from_secs(30))
        .await
        .unwrap();
    match &exec.outputs[..] {
        [
            Output::Result {
                data,
                execution_count,
                ..
            },
        ] => {
            assert_eq!(data["text/plain"], "2");
            assert_eq!(*execution_count, exec.execution_count);
        }
        other => panic!("{other:?}"),
    }

    // A cell that never ends is interrupted after its timeout; the kernel stays usable.
    let exec = channel
        .execute("while True: pass", Duration::from_secs(2))
        .await
        .unwrap();
    assert!(exec.interrupted);
    assert_eq!(exec.error().map(|e| e.0), Some("KeyboardInterrupt"));
    let exec = channel
        .execute("'still alive'", Duration::from_secs(30))
        .await
        .unwrap();
    assert!(
        matches!(&exec.outputs[..], [Output::Result { data, .. }] if data["text/plain"] == "'still alive'")
    );

    let listed = server.kernels().await.unwrap();
    assert!(listed.iter().any(|k| k.id == kernel.id));
    let model = server
        .kernel(&kernel.id)
        .await
        .unwrap()
        .expect("the kernel exists");
    assert!(model.last_activity.is_some());
    server.shutdown(&kernel.id).await.unwrap();
    assert!(server.kernel(&kernel.id).await.unwrap().is_none());
    server
        .shutdown(&kernel.id)
        .await
        .expect("shutting down a gone kernel is fine");
    job.stop().await;
}

#[tokio::test]
async fn notebooks_round_trip_through_the_contents_api() {
    let env = Env::load();
    let (job, server) = server(&env).await;
    let dir = format!("it-{}/deep/er", common::random_suffix());
    let path = format!("{dir}/analysis.ipynb");
    let mut nb = notebook::new_notebook("python3", "Python 3", "python");
    let out = Output::Stream {
        name: "stdout".into(),
        text: "hi\n".into(),
    };
    notebook::append_code(
        &mut nb,
        "print('hi')",
        &[out],
        Some(1),
        serde_json::Value::Null,
    )
    .unwrap();
    notebook::append_markdown(&mut nb, "# notes");
    notebook::append_code(
        &mut nb,
        "x = 41\nx + 1",
        &[],
        Some(2),
        serde_json::Value::Null,
    )
    .unwrap();
    assert!(!server.exists(&path).await.unwrap());
    let written = server
        .put_notebook(&path, &notebook::to_json(&nb).unwrap())
        .await
        .unwrap();
    assert_eq!(written.kind, "notebook");
    let back = notebook::from_json(&server.get(&path, true).await.unwrap().content).unwrap();
    assert_eq!(notebook::code_cells(&back), notebook::code_cells(&nb));

    let copy = format!("{dir}/analysis_continued.ipynb");
    server.copy(&path, &copy).await.unwrap();
    let copied = notebook::from_json(&server.get(&copy, true).await.unwrap().content).unwrap();
    assert_eq!(notebook::code_cells(&copied), notebook::code_cells(&nb));

    server
        .put_file(&format!("{dir}/data.txt"), "a,b\n1,2\n", "text")
        .await
        .unwrap();
    let listing = server.get(&dir, true).await.unwrap();
    let names: Vec<&str> = listing
        .content
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    for want in ["analysis.ipynb", "analysis_continued.ipynb", "data.txt"] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    for bad in ["../../etc/passwd", "/etc/passwd"] {
        assert!(matches!(
            server.get(bad, true).await,
            Err(JupyterError::PathOutsideRoot { .. })
        ));
        assert!(matches!(
            server.put_file(bad, "x", "text").await,
            Err(JupyterError::PathOutsideRoot { .. })
        ));
    }
    assert!(matches!(
        server.get("no/such.ipynb", false).await,
        Err(JupyterError::NotFound { .. })
    ));
    let wrong = JupyterServer::new(&job.url, "wrong-token", Duration::from_secs(5)).unwrap();
    assert!(matches!(
        wrong.status().await,
        Err(JupyterError::Forbidden { .. })
    ));
    job.stop().await;
}
