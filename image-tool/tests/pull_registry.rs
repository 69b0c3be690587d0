//! `pull` against Debian's docker-registry started privately on loopback and filled with
//! skopeo (same tree as umoci's unpack, a corrupted blob refused naming its digest and
//! leaving nothing, a missing tag refused), and against a registry with Basic and bearer
//! token auth that the test itself serves, with credentials from an auth file.

mod common;
use common::{assert_same_tree, err, have, ok, privileged, sh, umoci_image, Temp};
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Debian's docker-registry with its own config, storage and port, stopped by pid.
struct Registry {
    child: Child,
    port: u16,
    storage: PathBuf,
}

impl Registry {
    fn start(dir: &Path) -> Registry {
        let port = free_port();
        let storage = dir.join("registry-storage");
        let config = dir.join("registry.yml");
        fs::write(&config, format!("version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n", storage.display())).unwrap();
        let log = fs::File::create(dir.join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("cannot start docker-registry");
        let registry = Registry { child, port, storage };
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not come up; see {}",
                dir.join("registry.log").display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }

    fn push(&self, layout: &Path, tag: &str, name: &str) {
        sh(&format!(
            "skopeo copy -q --dest-tls-verify=false oci:{}:{tag} docker://127.0.0.1:{}/{name}",
            layout.display(),
            self.port
        ));
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ready(test: &str) -> bool {
    privileged(test) && have("docker-registry", test) && have("skopeo", test) && have("umoci", test)
}

#[test]
fn pull_from_a_private_registry() {
    if !ready("pull_from_a_private_registry") {
        return;
    }
    let t = Temp::new();
    umoci_image(&t.0, "odd", "amd");
    let registry = Registry::start(&t.0);
    registry.push(&t.0.join("L"), "odd", "team/odd:1");
    let store = t.0.join("store");
    let name = format!("127.0.0.1:{}/team/odd:1", registry.port);
    assert_eq!(ok(&store, &["pull", &name]), format!("{name}\n"));
    // The same image as importing the layout: same manifest digest, same tree as umoci's.
    let imported = t.0.join("imported");
    ok(&imported, &["import", &format!("{}:odd", t.0.join("L").display())]);
    let digest = |store: &Path, name: &str| -> String {
        let doc: serde_json::Value = serde_json::from_str(&ok(store, &["inspect", name])).unwrap();
        doc["digest"].as_str().unwrap().to_string()
    };
    assert_eq!(digest(&store, &name), digest(&imported, "odd"));
    let bundle = t.0.join("bundle");
    ok(&store, &["unpack", "--network", "none", &name, bundle.to_str().unwrap()]);
    sh(&format!("cd {}; umoci unpack --image L:odd reference >/dev/null", t.0.display()));
    assert_same_tree(&bundle.join("rootfs"), &t.0.join("reference/rootfs"), "pulled image against umoci");
    ok(&store, &["release", bundle.to_str().unwrap()]);

    // A missing tag is refused.
    let e = err(&store, &["pull", &format!("127.0.0.1:{}/team/odd:nope", registry.port)]);
    assert!(e.contains("not found"), "{e}");

    // A corrupted layer is refused naming its digest, and the pull leaves nothing.
    let fresh = t.0.join("fresh");
    let layer = largest_blob(&registry.storage);
    let mut data = fs::read(&layer).unwrap();
    let middle = data.len() / 2;
    data[middle] ^= 0xff;
    fs::write(&layer, data).unwrap();
    let hex = layer.parent().unwrap().file_name().unwrap().to_str().unwrap().to_string();
    let e = err(&fresh, &["pull", &name]);
    assert!(e.contains(&format!("sha256:{hex}")), "{e}");
    assert_eq!(ok(&fresh, &["list"]), "");
    assert_eq!(fs::read_dir(fresh.join("blobs/sha256")).unwrap().count(), 0, "the failed pull left blobs");
    assert_eq!(fs::read_dir(fresh.join("tmp")).unwrap().count(), 0, "the failed pull left staging files");
}

/// The registry's largest blob file (a layer).
fn largest_blob(storage: &Path) -> PathBuf {
    let mut best: Option<(u64, PathBuf)> = None;
    let mut stack = vec![storage.join("docker/registry/v2/blobs")];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().unwrap() == "data" {
                let size = entry.metadata().unwrap().len();
                if best.as_ref().is_none_or(|(s, _)| size > *s) {
                    best = Some((size, path));
                }
            }
        }
    }
    best.unwrap().1
}

/// How the test's own registry wants clients to authenticate.
#[derive(Clone, Copy, PartialEq)]
enum Auth {
    Basic,
    Bearer,
}

const USER: &str = "berth";
const PASSWORD: &str = "s3cret";
const TOKEN: &str = "token-for-berth";

/// A registry the test serves from an OCI layout, demanding Basic auth or bearer tokens
/// from its own token endpoint (`/token`, which itself wants Basic credentials).
fn serve(layout: PathBuf, auth: Auth) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let _ = answer(stream, &layout, auth, port);
        }
    });
    port
}

fn answer(mut stream: TcpStream, layout: &Path, auth: Auth, port: u16) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut authorization = String::new();
    loop {
        let mut header = String::new();
        reader.read_line(&mut header)?;
        if header.trim().is_empty() {
            break;
        }
        if let Some(value) = header.strip_prefix("Authorization: ").or(header.strip_prefix("authorization: ")) {
            authorization = value.trim().to_string();
        }
    }
    use base64::Engine;
    let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}")));
    let reply =
        |stream: &mut TcpStream, status: &str, headers: &[(&str, String)], body: &[u8]| -> std::io::Result<()> {
            let mut head = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
            for (k, v) in headers {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            stream.write_all(head.as_bytes())?;
            stream.write_all(b"\r\n")?;
            stream.write_all(body)
        };
    if path.starts_with("/token") {
        if authorization != basic {
            return reply(&mut stream, "401 Unauthorized", &[], b"{}");
        }
        assert!(path.contains("scope=repository%3Aapp%3Apull") || path.contains("scope=repository:app:pull"), "{path}");
        return reply(
            &mut stream,
            "200 OK",
            &[("Content-Type", "application/json".into())],
            format!("{{\"token\":\"{TOKEN}\"}}").as_bytes(),
        );
    }
    let allowed = match auth {
        Auth::Basic => authorization == basic,
        Auth::Bearer => authorization == format!("Bearer {TOKEN}"),
    };
    if !allowed {
        let challenge = match auth {
            Auth::Basic => "Basic realm=\"test\"".to_string(),
            Auth::Bearer => {
                format!("Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"test\",scope=\"repository:app:pull\"")
            }
        };
        return reply(&mut stream, "401 Unauthorized", &[("WWW-Authenticate", challenge)], b"");
    }
    let index: serde_json::Value = serde_json::from_slice(&fs::read(layout.join("index.json"))?)?;
    let blob = |digest: &str| fs::read(layout.join("blobs/sha256").join(digest.trim_start_matches("sha256:")));
    if let Some(reference) = path.strip_prefix("/v2/app/manifests/") {
        let entry =
            index["manifests"].as_array().unwrap().iter().find(|m| {
                m["annotations"]["org.opencontainers.image.ref.name"] == reference || m["digest"] == reference
            });
        return match entry {
            Some(m) => reply(
                &mut stream,
                "200 OK",
                &[("Content-Type", m["mediaType"].as_str().unwrap().to_string())],
                &blob(m["digest"].as_str().unwrap())?,
            ),
            None => reply(&mut stream, "404 Not Found", &[], b""),
        };
    }
    if let Some(digest) = path.strip_prefix("/v2/app/blobs/") {
        return match blob(digest) {
            Ok(data) => reply(&mut stream, "200 OK", &[], &data),
            Err(_) => reply(&mut stream, "404 Not Found", &[], b""),
        };
    }
    let mut rest = Vec::new();
    let _ = reader.read_to_end(&mut rest);
    reply(&mut stream, "404 Not Found", &[], b"")
}

#[test]
fn basic_and_bearer_auth_with_an_auth_file() {
    if !privileged("basic_and_bearer_auth_with_an_auth_file")
        || !have("umoci", "basic_and_bearer_auth_with_an_auth_file")
    {
        return;
    }
    let t = Temp::new();
    umoci_image(&t.0, "odd", "amd");
    let layout = t.0.join("L");
    use base64::Engine;
    for auth in [Auth::Basic, Auth::Bearer] {
        let port = serve(layout.clone(), auth);
        let store = t.0.join(format!("store-{port}"));
        let name = format!("127.0.0.1:{port}/app:odd");
        // Without credentials the registry's demand reaches the user.
        let authfile = t.0.join(format!("auth-{port}.json"));
        fs::write(&authfile, "{\"auths\":{}}").unwrap();
        let e = err(&store, &["pull", "--authfile", authfile.to_str().unwrap(), &name]);
        assert!(e.contains("401") || e.contains("wants credentials"), "{e}");
        assert_eq!(ok(&store, &["list"]), "");
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
        fs::write(&authfile, format!("{{\"auths\":{{\"127.0.0.1:{port}\":{{\"auth\":\"{encoded}\"}}}}}}")).unwrap();
        assert_eq!(ok(&store, &["pull", "--authfile", authfile.to_str().unwrap(), &name]), format!("{name}\n"));
        let doc: serde_json::Value = serde_json::from_str(&ok(&store, &["inspect", &name])).unwrap();
        assert_eq!(doc["config"]["config"]["Cmd"][0], "/bin/sh");
        // Docker's config.json, found through DOCKER_CONFIG without --authfile.
        let docker = t.0.join(format!("docker-{port}"));
        fs::create_dir(&docker).unwrap();
        fs::copy(&authfile, docker.join("config.json")).unwrap();
        let again = t.0.join(format!("store-docker-{port}"));
        let out = Command::new(env!("CARGO_BIN_EXE_berth-image"))
            .arg("--store")
            .arg(&again)
            .args(["pull", &name])
            .env("DOCKER_CONFIG", &docker)
            .env("HOME", &t.0)
            .env_remove("REGISTRY_AUTH_FILE")
            .env_remove("XDG_RUNTIME_DIR")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn pull_chooses_one_platform_of_an_index() {
    if !ready("pull_chooses_one_platform_of_an_index") {
        return;
    }
    let t = Temp::new();
    umoci_image(&t.0, "amd", "amd");
    umoci_image(&t.0, "arm", "arm");
    common::tag_two_platform_index(&t.0.join("L"));
    let registry = Registry::start(&t.0);
    sh(&format!(
        "skopeo copy -q --multi-arch all --dest-tls-verify=false oci:{}:multi docker://127.0.0.1:{}/multi:1",
        t.0.join("L").display(),
        registry.port
    ));
    let name = format!("127.0.0.1:{}/multi:1", registry.port);
    for (platform, flavour) in [(None, "amd\n"), (Some("linux/arm64"), "arm\n")] {
        let store = t.0.join(format!("store-{flavour}").trim());
        let mut args = vec!["pull"];
        args.extend(platform.iter().flat_map(|p| ["--platform", *p]));
        args.push(&name);
        ok(&store, &args);
        let bundle = t.0.join(format!("bundle-{}", flavour.trim()));
        ok(&store, &["unpack", "--network", "none", &name, bundle.to_str().unwrap()]);
        assert_eq!(fs::read_to_string(bundle.join("rootfs/a/flavour")).unwrap(), flavour);
        ok(&store, &["release", bundle.to_str().unwrap()]);
    }
    let e = err(&t.0.join("none"), &["pull", "--platform", "linux/s390x", &name]);
    assert!(e.contains("no image for linux/s390x"), "{e}");
}
