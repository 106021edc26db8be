//! The batch script that runs a Jupyter server inside a SLURM job.
//!
//! It prepares the node (the cluster's preamble), picks a free port, writes a small
//! Jupyter config that turns Nagle's algorithm off on kernel websockets, reports
//! `host:port` through the job comment (keeping the owner mark in front), and execs the
//! server. The token arrives as `$JUPYTER_TOKEN` in the job environment (never on a
//! command line, in the script, the job name or the comment); the script moves it into a
//! file only the job's user can read and removes it from the environment before the
//! preamble runs, so kernels (and `print(os.environ)` in a transcript) never see it.

use crate::api::JobTemplate;

use super::identity::JobOwner;

/// Quotes a string for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The Jupyter server config every allocation's server loads with `--config`:
/// - Tornado sends kernel messages with Nagle's algorithm on unless told otherwise, which
///   adds ~40 ms to every execute round trip (measured: 44 ms vs 5.4 ms): TCP_NODELAY on
///   for every kernel websocket.
/// - The IOPub rate limits (1 MB/s by default, for browsers) would silently drop a large
///   output; clients here are slurmlab's own, which cut long output themselves.
/// - The token is read from `token` next to the config (mode 0600), not the environment.
/// - Saves replace the file atomically. Jupyter's own "atomic" writing rewrites the file in
///   place (after copying it aside), so a reader during a save (a Resume, JupyterLab,
///   `read_notebook`) can get a torn notebook, and its recovery then puts the copy back over
///   the file being written. Here a save writes a hidden temporary file in the same
///   directory, syncs it and renames it over the old one: a reader sees the old notebook or
///   the new one, never half of one.
pub const SERVER_CONFIG: &str = r#"# Written by slurmlab: TCP_NODELAY on kernel websockets (saves ~40 ms per execute),
# no IOPub rate limits (agents get long output cut by the gateway, never dropped), and
# saves that replace files atomically (readers never see half a notebook).
c.ZMQChannelsWebsocketConnection.limit_rate = False

import contextlib as _contextlib
import os as _os
import tempfile as _tempfile

from jupyter_server.services.contents import fileio as _fileio

_slurmlab_in_place = _fileio.atomic_writing


@_contextlib.contextmanager
def _replace_writing(path, text=True, encoding="utf-8", log=None, **kwargs):
    if _os.path.islink(path):
        path = _os.path.join(_os.path.dirname(path), _os.readlink(path))
    directory = _os.path.dirname(path) or _os.getcwd()
    if not _os.access(directory, _os.W_OK):
        # No room for a temporary file: Jupyter's own way (in place).
        with _slurmlab_in_place(path, text=text, encoding=encoding, log=log, **kwargs) as f:
            yield f
        return
    fd, tmp = _tempfile.mkstemp(
        prefix="." + _os.path.basename(path) + ".", suffix=".saving", dir=directory
    )
    try:
        if _os.path.exists(path):
            _os.chmod(tmp, _os.stat(path).st_mode & 0o7777)
        if text:
            kwargs.setdefault("newline", "\n")
            f = _os.fdopen(fd, "w", encoding=encoding, **kwargs)
        else:
            f = _os.fdopen(fd, "wb", **kwargs)
        with f:
            yield f
            f.flush()
            _os.fsync(f.fileno())
        _os.replace(tmp, path)
    except BaseException:
        with _contextlib.suppress(FileNotFoundError):
            _os.unlink(tmp)
        raise


_fileio.atomic_writing = _replace_writing

with open(_os.path.join(_os.path.dirname(__file__), "token")) as _f:
    c.IdentityProvider.token = _f.read().strip()

from jupyter_server.services.kernels.websocket import KernelWebsocketHandler as _KWH

_slurmlab_open = _KWH.open


def _open_nodelay(self, *args, **kwargs):
    self.set_nodelay(True)
    return _slurmlab_open(self, *args, **kwargs)


_KWH.open = _open_nodelay
"#;

/// Appended to [`SERVER_CONFIG`]: a server extension defined in the config itself (no
/// package to install in the job) serving `GET /slurmlab/resources` with the server's
/// token: what the job has and uses (CPUs, memory of the job's cgroup and of the node,
/// load, GPUs through `nvidia-smi`, the server's and kernels' processes). It answers
/// from the server process, so it works while a kernel is busy (the gateway's
/// `check_resources`).
pub const RESOURCES_EXTENSION: &str = r#"
import sys as _sys
import types as _types


def _slurmlab_resources_load(serverapp):
    import asyncio
    import json
    import os
    import shutil
    import subprocess

    from jupyter_server.base.handlers import APIHandler
    from jupyter_server.utils import url_path_join
    from tornado import web

    def number(text):
        try:
            return float(text)
        except ValueError:
            return None

    def node_memory():
        info = {}
        with open("/proc/meminfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                info[key] = int(value.split()[0]) * 1024
        return {"total_bytes": info.get("MemTotal"), "available_bytes": info.get("MemAvailable")}

    def job_memory():
        # The cgroup SLURM put the job in (cgroup v2 or v1); None outside one.
        try:
            with open("/proc/self/cgroup") as f:
                lines = f.read().splitlines()
        except OSError:
            return None
        for line in lines:
            _, controllers, path = line.split(":", 2)
            if controllers == "":
                base, files = "/sys/fs/cgroup" + path, ("memory.max", "memory.current")
            elif "memory" in controllers.split(","):
                base = "/sys/fs/cgroup/memory" + path
                files = ("memory.limit_in_bytes", "memory.usage_in_bytes")
            else:
                continue
            try:
                values = []
                for name in files:
                    with open(os.path.join(base, name)) as f:
                        values.append(f.read().strip())
            except OSError:
                continue
            limit, used = values
            unlimited = limit == "max" or int(limit) >= 2**60
            return {"cgroup": path, "limit_bytes": None if unlimited else int(limit),
                    "used_bytes": int(used)}
        return None

    def gpus():
        smi = shutil.which("nvidia-smi")
        if smi is None:
            return []
        query = "index,name,utilization.gpu,memory.used,memory.total"
        try:
            done = subprocess.run([smi, "--query-gpu=" + query, "--format=csv,noheader,nounits"],
                                  capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError) as e:
            return [{"error": str(e)}]
        found = []
        for line in done.stdout.splitlines():
            f = [x.strip() for x in line.split(",")]
            if len(f) == 5:
                found.append({"index": f[0], "name": f[1], "utilization_percent": number(f[2]),
                              "memory_used_mib": number(f[3]), "memory_total_mib": number(f[4])})
        return found

    async def processes():
        # The server and its kernels: CPU over half a second, resident memory.
        try:
            import psutil
        except ImportError:
            return None
        me = psutil.Process()
        procs = [me] + me.children(recursive=True)
        for p in procs:
            try:
                p.cpu_percent(None)
            except psutil.Error:
                pass
        await asyncio.sleep(0.5)
        cpu, rss, n = 0.0, 0, 0
        for p in procs:
            try:
                cpu += p.cpu_percent(None)
                rss += p.memory_info().rss
                n += 1
            except psutil.Error:
                pass
        return {"count": n, "cpu_percent": round(cpu, 1), "rss_bytes": rss}

    slurm_env = ("SLURM_JOB_ID", "SLURM_JOB_PARTITION", "SLURM_CPUS_ON_NODE", "SLURM_MEM_PER_NODE",
                 "SLURM_MEM_PER_CPU", "SLURM_JOB_GPUS", "SLURM_GPUS_ON_NODE", "CUDA_VISIBLE_DEVICES")

    class Resources(APIHandler):
        @web.authenticated
        async def get(self):
            loop = asyncio.get_running_loop()
            found_gpus = await loop.run_in_executor(None, gpus)
            try:
                load = [round(x, 2) for x in os.getloadavg()]
            except OSError:
                load = None
            self.finish(json.dumps({
                "node": os.uname().nodename,
                "cpus": {"allocated": len(os.sched_getaffinity(0)), "node": os.cpu_count(),
                         "load_average": load},
                "memory": {"job": job_memory(), "node": node_memory()},
                "gpus": found_gpus,
                "processes": await processes(),
                "slurm": {k: os.environ[k] for k in slurm_env if k in os.environ},
            }))

    route = url_path_join(serverapp.base_url, "/slurmlab/resources")
    serverapp.web_app.add_handlers(".*$", [(route, Resources)])


_slurmlab_ext = _types.ModuleType("slurmlab_resources")
_slurmlab_ext._jupyter_server_extension_points = lambda: [{"module": "slurmlab_resources"}]
_slurmlab_ext._load_jupyter_server_extension = _slurmlab_resources_load
_sys.modules["slurmlab_resources"] = _slurmlab_ext
c.ServerApp.jpserver_extensions.update({"slurmlab_resources": True})
"#;

/// Renders the batch script for one allocation, whose job carries `comment` (the signed
/// tag, which the script keeps in front of the endpoint it reports).
pub fn render(template: &JobTemplate, owner: &JobOwner, comment: &str) -> String {
    let mut s = String::new();
    s.push_str("#!/bin/bash\n");
    s.push_str(&format!(
        "# Generated by slurmlab for ComputeAllocation {}/{}: runs a Jupyter server and\n\
         # reports where it listens through the job comment. The token arrives in\n\
         # $JUPYTER_TOKEN and is moved into a 0600 file before anything else runs.\n",
        owner.namespace, owner.name
    ));
    s.push_str("set -euo pipefail\n");
    // Files the job creates (config, token, logs) are its user's alone.
    s.push_str("umask 077\n");
    // A shell variable, not exported: no child process inherits it.
    s.push_str(
        "SLURMLAB_TOKEN=\"${JUPYTER_TOKEN:?slurmlab: no JUPYTER_TOKEN in the job environment}\"\n",
    );
    s.push_str("unset JUPYTER_TOKEN\n");
    // REST submissions carry only the environment we send: derive HOME from the account.
    s.push_str("export HOME=\"${HOME:-$(getent passwd \"$(id -un)\" | cut -d: -f6)}\"\n");
    if !template.preamble.is_empty() {
        s.push_str("# --- preamble from the SlurmCluster's jobTemplate ---\n");
        for line in &template.preamble {
            s.push_str(line);
            s.push('\n');
        }
        s.push_str("# --- end of preamble ---\n");
    }
    // The root may use shell expansions ($HOME), so it is not quoted here.
    s.push_str(&format!(
        "ROOT=\"{}\"\n",
        template.notebook_root.replace('"', "\\\"")
    ));
    s.push_str("mkdir -p \"$ROOT\"\n");
    match &template.bind_address {
        Some(addr) => s.push_str(&format!("HOST={}\n", shell_quote(addr))),
        // SLURMD_NODENAME is the batch host the controller checks the endpoint against.
        None => {
            s.push_str("HOST=\"${SLURMD_NODENAME:-$(hostname -s)}\"\n");
            if let Some(domain) = &template.node_domain {
                s.push_str(&format!(
                    "HOST=\"$HOST\"{}\n",
                    shell_quote(&format!(".{domain}"))
                ));
            }
        }
    }
    s.push_str("CONF_DIR=\"${TMPDIR:-/tmp}/slurmlab-$SLURM_JOB_ID\"\n");
    s.push_str("mkdir -p \"$CONF_DIR\" && chmod 700 \"$CONF_DIR\"\n");
    s.push_str("printf '%s' \"$SLURMLAB_TOKEN\" > \"$CONF_DIR/token\"\nunset SLURMLAB_TOKEN\n");
    s.push_str("cat > \"$CONF_DIR/jupyter_server_config.py\" <<'PY'\n");
    s.push_str(SERVER_CONFIG);
    s.push_str(RESOURCES_EXTENSION);
    s.push_str("PY\n");
    // The server runs as a child so the config can be removed when the job ends (scancel
    // sends SIGTERM to every process of the job).
    s.push_str("trap 'rm -rf \"$CONF_DIR\"' EXIT\n");
    s.push_str("trap 'kill -TERM \"${SERVER:-}\" 2>/dev/null; wait; exit 143' TERM INT\n");
    // A free port can be taken by someone else before the server binds it (seconds later):
    // a server that dies while starting gets another port, reported again.
    s.push_str("rc=1\nfor attempt in 1 2 3; do\n");
    s.push_str(concat!(
        "  PORT=$(python3 - \"$HOST\" <<'PY' 2>/dev/null || echo $((20000 + RANDOM % 40000))\n",
        "import socket, sys\n",
        "s = socket.socket()\n",
        "s.bind((sys.argv[1], 0))\n",
        "print(s.getsockname()[1])\n",
        "PY\n",
        ")\n",
    ));
    s.push_str(&format!(
        "  scontrol update JobId=\"$SLURM_JOB_ID\" Comment={}\" jupyter=$HOST:$PORT\"\n",
        shell_quote(comment)
    ));
    s.push_str("  started=$SECONDS\n");
    s.push_str(&format!(
        "  {} --no-browser --ip=\"$HOST\" --port=\"$PORT\" --ServerApp.port_retries=0 \\\n    \
         --ServerApp.root_dir=\"$ROOT\" --config=\"$CONF_DIR/jupyter_server_config.py\" &\n",
        template.server_command
    ));
    s.push_str("  SERVER=$!\n  rc=0\n  wait \"$SERVER\" || rc=$?\n");
    s.push_str(
        "  if [ \"$rc\" = 0 ] || [ $((SECONDS - started)) -ge 30 ]; then exit \"$rc\"; fi\n",
    );
    s.push_str("  echo \"slurmlab: the server exited ($rc) while starting (attempt $attempt); trying another port\" >&2\n");
    s.push_str("done\nexit \"$rc\"\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn template() -> JobTemplate {
        JobTemplate {
            preamble: vec![
                "module load python/3.12".into(),
                "source /opt/venv/bin/activate".into(),
            ],
            server_command: "jupyter server".into(),
            notebook_root: "$HOME/notebooks".into(),
            bind_address: None,
            node_domain: None,
            working_directory: None,
            environment: BTreeMap::new(),
        }
    }

    fn owner() -> JobOwner {
        JobOwner {
            namespace: "ns".into(),
            name: "box".into(),
            uid: "u-1".into(),
            attempt: 0,
            cluster_uid: "c".into(),
            nonce: "n".into(),
        }
    }

    const COMMENT: &str = "slurmlab owner=ns/box uid=u-1 attempt=0 cluster=c nonce=n mac=m";

    #[test]
    fn the_script_runs_the_preamble_then_reports_and_starts_the_server() {
        let s = render(&template(), &owner(), COMMENT);
        let pre = s.find("module load python/3.12").unwrap();
        let report = s.find("  scontrol update JobId=\"$SLURM_JOB_ID\" Comment='slurmlab owner=ns/box uid=u-1 attempt=0 cluster=c nonce=n mac=m'\" jupyter=$HOST:$PORT\"").unwrap();
        let server = s
            .find("jupyter server --no-browser --ip=\"$HOST\" --port=\"$PORT\"")
            .unwrap();
        assert!(pre < report && report < server, "{s}");
        assert!(
            s.contains("HOST=\"${SLURMD_NODENAME:-$(hostname -s)}\""),
            "default host is the batch host as SLURM names it"
        );
        let unset = s.find("unset JUPYTER_TOKEN").unwrap();
        assert!(
            unset < pre,
            "the token leaves the environment before the preamble"
        );
        assert!(s.contains("umask 077"));
        assert!(SERVER_CONFIG.contains("IdentityProvider.token"));
        assert!(s.contains("ROOT=\"$HOME/notebooks\""));
        assert!(s.contains("--config=\"$CONF_DIR/jupyter_server_config.py\""));
        assert!(s.contains("set_nodelay(True)"));
    }

    #[test]
    fn no_token_is_ever_in_the_script() {
        let s = render(&template(), &owner(), COMMENT);
        // Never on a command line: the server reads it from the 0600 file.
        assert!(!s.contains("--ServerApp.token") && !s.contains("--IdentityProvider.token"));
        assert!(
            s.contains("$JUPYTER_TOKEN"),
            "the header says where the token is"
        );
    }

    #[test]
    fn a_bind_address_is_quoted_and_used() {
        let t = JobTemplate {
            bind_address: Some("127.0.0.1".into()),
            node_domain: None,
            ..template()
        };
        assert!(render(&t, &owner(), COMMENT).contains("HOST='127.0.0.1'\n"));
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
    }

    #[test]
    fn the_script_is_valid_bash() {
        let path = std::env::temp_dir().join(format!("slurmlab-script-{}.sh", std::process::id()));
        std::fs::write(&path, render(&template(), &owner(), COMMENT)).unwrap();
        let out = std::process::Command::new("bash")
            .arg("-n")
            .arg(&path)
            .output()
            .unwrap();
        std::fs::remove_file(&path).ok();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn a_server_that_dies_while_starting_gets_another_port() {
        // Fake scontrol and server: the server fails at once the first time (its port was
        // taken), then runs; the script reports a port each time and ends like the server.
        let dir = std::env::temp_dir().join(format!("slurmlab-retry-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, body: &str| {
            let p = dir.join(name);
            std::fs::write(&p, body).unwrap();
            std::process::Command::new("chmod")
                .arg("+x")
                .arg(&p)
                .status()
                .unwrap();
        };
        let calls = dir.join("calls");
        write(
            "scontrol",
            &format!("#!/bin/sh\necho \"$@\" >> {}\n", calls.display()),
        );
        let tries = dir.join("tries");
        write(
            "server",
            &format!(
                "#!/bin/sh\necho x >> {t}\n[ $(wc -l < {t}) -ge 2 ]\n",
                t = tries.display()
            ),
        );
        let t = JobTemplate {
            server_command: dir.join("server").display().to_string(),
            notebook_root: dir.join("root").display().to_string(),
            bind_address: Some("127.0.0.1".into()),
            node_domain: None,
            preamble: vec![],
            ..template()
        };
        let script = dir.join("job.sh");
        std::fs::write(&script, render(&t, &owner(), COMMENT)).unwrap();
        let out = std::process::Command::new("bash")
            .arg(&script)
            .env("PATH", format!("{}:/usr/bin:/bin", dir.display()))
            .env("SLURM_JOB_ID", "7")
            .env("JUPYTER_TOKEN", "t0k3n")
            .env("TMPDIR", &dir)
            .output()
            .unwrap();
        let reported = std::fs::read_to_string(&calls).unwrap_or_default();
        std::fs::remove_dir_all(&dir).ok();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            reported.lines().count(),
            2,
            "one report per attempt: {reported}"
        );
        assert!(String::from_utf8_lossy(&out.stderr).contains("trying another port"));
    }
}
