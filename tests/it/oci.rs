//! Pieces through a real OCI registry on 127.0.0.1 (Debian's
//! `docker-registry`, distribution 2.8, started here with a config of its
//! own in a temporary directory; installed with apt when missing, as root
//! on Debian; elsewhere a machine without it fails this test saying so):
//! `piece push`, then `piece install oci://...` into a database, the digest
//! checked.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cli::free_port;
use crate::support::{cache_dir, guest_dir};

struct LocalRegistry {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl LocalRegistry {
    fn start() -> LocalRegistry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{ level: warn }}\nstorage: {{ filesystem: {{ rootdirectory: {} }}, delete: {{ enabled: true }} }}\nhttp: {{ addr: 127.0.0.1:{port} }}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        crate::support::ensure_apt("docker-registry", "docker-registry");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "the OCI tests need `docker-registry` (Debian package docker-registry; \
                     .ci/run installs it): {e}"
                )
            });
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "docker-registry never listened");
            std::thread::sleep(Duration::from_millis(50));
        }
        LocalRegistry {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn omniflow(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_omniflow"))
        .args(args)
        .env("OMNIFLOW_CACHE_DIR", cache_dir())
        .env_remove("OMNIFLOW_DATABASE_URL")
        .output()
        .unwrap()
}

#[test]
fn a_piece_pushed_to_a_registry_installs_from_it_with_its_digest() {
    let registry = LocalRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let file = guest_dir().join("versioned_a.wasm");
    let reference = format!("oci://127.0.0.1:{}/pieces/versioned:0.1.0", registry.port);
    let out = omniflow(&["piece", "push", file.to_str().unwrap(), &reference]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pushed = String::from_utf8_lossy(&out.stdout).to_string();
    let bytes = std::fs::read(&file).unwrap();
    let digest = omniflow::runtime::PieceDigest::of(&bytes);
    assert!(pushed.contains(digest.hex()), "{pushed}");

    let db = dir.path().join("o.db");
    let out = omniflow(&["piece", "install", &reference, "--db", db.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = omniflow(&["piece", "list", "--json", "--db", db.to_str().unwrap()]);
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed[0]["name"], "versioned", "{listed}");
    assert_eq!(listed[0]["digest"], digest.hex(), "{listed}");

    // A tag that is not there, and something that is not a piece, are refused.
    let missing = format!("oci://127.0.0.1:{}/pieces/versioned:9.9.9", registry.port);
    let out = omniflow(&["piece", "install", &missing, "--db", db.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("404"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"not a component").unwrap();
    let out = omniflow(&["piece", "push", junk.to_str().unwrap(), &reference]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a valid piece"));
}
