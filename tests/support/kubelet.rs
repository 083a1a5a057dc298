//! A test "kubelet" for the real API server harness (`vmigrate_kubevirt::realkube`), which has
//! the job controller but no node: it takes every pod of a namespace the job controller
//! created, runs the pod's container **command and arguments exactly as the Job gives them** in
//! a throw-away root that looks like the container's file system, and writes the pod's status
//! back (phase, exit code, termination message) so the job controller completes or fails the
//! Job as it would on a node.
//!
//! The "container": a private mount namespace (`unshare -m`, root only) with a tmpfs root
//! holding the host's `/usr`, `/etc`, `/boot` and `/var` (the image stand-in: this machine has
//! the packages the images install), a fresh `/tmp`, `/proc`, `/sys`, and a `/dev` with only
//! the basic character devices (no `/dev/kvm`: no KVM device plugin here, so libguestfs runs
//! its appliance under TCG). Into it, at the paths the pod names:
//! - PersistentVolumeClaims: `<pvcs>/<claim>/` (a Filesystem volume; mounted at `mountPath`);
//!   a Block volume's device (`devicePath`) is the file `<pvcs>/<claim>/block.dev`;
//! - ConfigMap volumes: their data as files, read from the API server;
//! - the termination message file (`terminationMessagePath`), read back afterwards;
//! - per image, extra programs (the `vmigrate` binary for the transfer image) under
//!   `/opt/image/bin`, first on `PATH`, and the image's environment;
//! - `shared` host folders at the same path (a `vmx://` datastore the worker reads from, as a
//!   node would mount a datastore).
//!
//! The environment is only what the image and the container give (`env` values and
//! `secretKeyRef`s read from the API server), nothing inherited from the test.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

/// What the kubelet provides for one image name.
#[derive(Debug, Clone, Default)]
pub struct Image {
    /// Programs put at `/opt/image/bin/<name>` (host path).
    pub programs: Vec<(String, PathBuf)>,
    /// The image's environment (`ENV` lines of its Containerfile).
    pub env: Vec<(String, String)>,
}

/// One pod the kubelet ran.
#[derive(Debug, Clone)]
pub struct RanPod {
    /// Pod name.
    pub name: String,
    /// The `job-name` label.
    pub job: String,
    /// The image.
    pub image: String,
    /// `command` followed by `args`, exactly as in the pod.
    pub argv: Vec<String>,
    /// Exit code (-1: killed).
    pub exit_code: i32,
    /// The termination message written back.
    pub message: String,
    /// The container's output (stdout and stderr), as `kubectl logs` would show it.
    pub log: PathBuf,
    /// Wall time.
    pub seconds: f64,
}

/// A running test kubelet; stops when dropped.
pub struct Kubelet {
    task: tokio::task::JoinHandle<()>,
    ran: Arc<Mutex<Vec<RanPod>>>,
}

impl Kubelet {
    /// Run the pods of namespace `ns`: PVCs under `pvcs`, scratch under `work`, `images` by
    /// image name (a pod of another image fails), `shared` host folders visible at their path.
    pub fn start(
        client: kube::Client,
        ns: &str,
        pvcs: &Path,
        work: &Path,
        images: BTreeMap<String, Image>,
        shared: Vec<PathBuf>,
    ) -> Kubelet {
        let ran: Arc<Mutex<Vec<RanPod>>> = Arc::default();
        let node = Node {
            client,
            ns: ns.to_string(),
            pvcs: pvcs.to_path_buf(),
            work: work.to_path_buf(),
            images: Arc::new(images),
            shared: Arc::new(shared),
        };
        let out = ran.clone();
        let task = tokio::spawn(async move {
            let pods: Api<Pod> = Api::namespaced(node.client.clone(), &node.ns);
            let mut seen = BTreeSet::new();
            loop {
                if let Ok(list) = pods.list(&ListParams::default()).await {
                    for pod in list.items {
                        let uid = pod.metadata.uid.clone().unwrap_or_default();
                        let pending =
                            pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending") == "Pending";
                        if pod.metadata.deletion_timestamp.is_some() || !pending || !seen.insert(uid) {
                            continue;
                        }
                        let node = node.clone();
                        let out = out.clone();
                        tokio::spawn(async move {
                            let name = pod.metadata.name.clone().unwrap_or_default();
                            let n2 = node.clone();
                            match tokio::spawn(async move { n2.run(pod).await }).await {
                                Ok(r) => out.lock().expect("lock").push(r),
                                // A pod this kubelet cannot run fails (so its Job does), rather
                                // than staying Pending until the test's timeout.
                                Err(e) => node.fail(&name, &format!("test kubelet: {e}")).await,
                            }
                        });
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Kubelet { task, ran }
    }

    /// The pods run so far (finished ones).
    pub fn ran(&self) -> Vec<RanPod> {
        self.ran.lock().expect("lock").clone()
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct Node {
    client: kube::Client,
    ns: String,
    pvcs: PathBuf,
    work: PathBuf,
    images: Arc<BTreeMap<String, Image>>,
    shared: Arc<Vec<PathBuf>>,
}

/// Shell quoting for the setup script.
fn q(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

impl Node {
    async fn run(&self, pod: Pod) -> RanPod {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let job = pod.metadata.labels.as_ref().and_then(|l| l.get("job-name")).cloned().unwrap_or_default();
        let spec = pod.spec.clone().expect("pod spec");
        assert_eq!(spec.containers.len(), 1, "one container per pod expected: {name}");
        let c = spec.containers[0].clone();
        let image = c.image.clone().unwrap_or_default();
        let dir = self.work.join(&name);
        std::fs::create_dir_all(dir.join("root")).expect("pod dir");
        let log = dir.join("log");
        let term_path = c.termination_message_path.clone().unwrap_or_else(|| "/dev/termination-log".into());
        let term_host = dir.join("termination-log");
        std::fs::write(&term_host, b"").expect("termination log");

        // Mounts: (host path, path in the container, read-only, is a file).
        let mut binds: Vec<(PathBuf, String, bool, bool)> = Vec::new();
        let volumes = spec.volumes.clone().unwrap_or_default();
        let host_of = |vol: &str| -> Option<(PathBuf, bool)> {
            let v = volumes.iter().find(|v| v.name == vol)?;
            if let Some(pvc) = &v.persistent_volume_claim {
                let p = self.pvcs.join(&pvc.claim_name);
                std::fs::create_dir_all(&p).expect("pvc dir");
                return Some((p, false));
            }
            None
        };
        for v in &volumes {
            if let Some(cm) = &v.config_map {
                let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.ns);
                let obj = api.get(&cm.name).await.expect("the pod's ConfigMap exists");
                let host = dir.join(format!("configmap-{}", v.name));
                std::fs::create_dir_all(&host).expect("configmap dir");
                for (k, val) in obj.data.unwrap_or_default() {
                    std::fs::write(host.join(k), val).expect("configmap file");
                }
            }
        }
        for m in c.volume_mounts.iter().flatten() {
            let host = if let Some((p, _)) = host_of(&m.name) {
                p
            } else if volumes.iter().any(|v| v.name == m.name && v.config_map.is_some()) {
                dir.join(format!("configmap-{}", m.name))
            } else if volumes.iter().any(|v| v.name == m.name && v.projected.is_some()) {
                // The service account token the admission controller adds: not given out here.
                let p = dir.join(format!("projected-{}", m.name));
                std::fs::create_dir_all(&p).expect("projected dir");
                p
            } else {
                panic!("pod {name}: volume {} has no stand-in here", m.name)
            };
            binds.push((host, m.mount_path.clone(), m.read_only.unwrap_or(false), false));
        }
        for d in c.volume_devices.iter().flatten() {
            let (p, _) = host_of(&d.name).unwrap_or_else(|| panic!("pod {name}: device volume {}", d.name));
            let dev = p.join("block.dev");
            assert!(dev.exists(), "pod {name}: Block volume {} needs {}", d.name, dev.display());
            binds.push((dev, d.device_path.clone(), false, true));
        }
        binds.push((term_host.clone(), term_path, false, true));

        // Environment: the image's, PATH with its programs first, then the container's.
        let img = self.images.get(&image).cloned();
        let mut env: Vec<(String, String)> =
            vec![("PATH".into(), "/opt/image/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into())];
        if let Some(img) = &img {
            env.extend(img.env.iter().cloned());
            for (prog, host) in &img.programs {
                binds.push((host.clone(), format!("/opt/image/bin/{prog}"), true, true));
            }
        }
        for e in c.env.iter().flatten() {
            let value = if let Some(v) = &e.value {
                v.clone()
            } else if let Some(sel) = e.value_from.as_ref().and_then(|f| f.secret_key_ref.as_ref()) {
                let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.ns);
                let s = api.get(&sel.name).await.expect("the pod's Secret exists");
                let bytes = s.data.unwrap_or_default().remove(&sel.key).expect("secret key").0;
                String::from_utf8(bytes).expect("utf-8 secret")
            } else {
                panic!("pod {name}: env {} has no stand-in here", e.name)
            };
            env.retain(|(k, _)| *k != e.name);
            env.push((e.name.clone(), value));
        }
        let argv: Vec<String> = c.command.iter().flatten().chain(c.args.iter().flatten()).cloned().collect();
        assert!(!argv.is_empty(), "pod {name}: no command (the image's entrypoint is not modelled)");

        let started = Instant::now();
        let start_time =
            k8s_openapi::chrono::Utc::now().to_rfc3339_opts(k8s_openapi::chrono::SecondsFormat::Secs, true);
        let exit_code = if img.is_none() {
            std::fs::write(&log, format!("image {image} is not available on this test node\n")).expect("log");
            -1
        } else {
            let script = self.setup_script(&dir.join("root"), &binds);
            let (script, log2, argv2) = (script, log.clone(), argv.clone());
            let env2 = env.clone();
            tokio::task::spawn_blocking(move || {
                let out = std::fs::File::create(&log2).expect("log file");
                let err = out.try_clone().expect("log file");
                let mut cmd = Command::new("unshare");
                cmd.args(["-m", "--propagation", "private", "sh", "-c", &script, "pod"]);
                cmd.args(env2.iter().map(|(k, v)| format!("{k}={v}")));
                cmd.args(&argv2);
                cmd.env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
                cmd.stdin(Stdio::null()).stdout(out).stderr(err);
                cmd.status().map(|s| s.code().unwrap_or(-1)).unwrap_or(-1)
            })
            .await
            .expect("pod process")
        };
        let seconds = started.elapsed().as_secs_f64();
        let mut message = std::fs::read_to_string(&term_host).unwrap_or_default();
        if message.is_empty()
            && exit_code != 0
            && c.termination_message_policy.as_deref() == Some("FallbackToLogsOnError")
        {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(80)..].join("\n");
            message = tail.chars().rev().take(2048).collect::<Vec<_>>().into_iter().rev().collect();
        }
        let end_time = k8s_openapi::chrono::Utc::now().to_rfc3339_opts(k8s_openapi::chrono::SecondsFormat::Secs, true);
        let phase = if exit_code == 0 { "Succeeded" } else { "Failed" };
        let status = json!({"status": {
            "phase": phase,
            "startTime": start_time,
            "containerStatuses": [{
                "name": c.name, "image": image, "imageID": "", "ready": false, "restartCount": 0, "started": false,
                "state": {"terminated": {
                    "exitCode": exit_code, "reason": if exit_code == 0 { "Completed" } else { "Error" },
                    "message": message, "startedAt": start_time, "finishedAt": end_time,
                }},
            }],
        }});
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.ns);
        if let Err(e) = pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(status)).await {
            eprintln!("test kubelet: cannot write the status of pod {name}: {e}");
        }
        RanPod { name, job, image, argv, exit_code, message, log, seconds }
    }

    /// Mark pod `name` Failed with `why` (the kubelet could not run it).
    async fn fail(&self, name: &str, why: &str) {
        eprintln!("{why}");
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.ns);
        let body = json!({"status": {"phase": "Failed", "message": why}});
        let _ = pods.patch_status(name, &PatchParams::default(), &Patch::Merge(body)).await;
    }

    /// The shell script (run by `unshare -m sh -c SCRIPT pod ENV... ARGV...`) that builds the
    /// container's root at `root` and runs the command in it.
    fn setup_script(&self, root: &Path, binds: &[(PathBuf, String, bool, bool)]) -> String {
        let r = q(&root.display().to_string());
        let mut s = format!("set -e\nR={r}\nmount -t tmpfs -o mode=755 tmpfs \"$R\"\n");
        for d in ["usr", "etc", "boot", "var"] {
            s += &format!("mkdir \"$R/{d}\" && mount --rbind /{d} \"$R/{d}\"\n");
        }
        for (l, t) in [("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib"), ("lib64", "usr/lib64")] {
            s += &format!("ln -s {t} \"$R/{l}\"\n");
        }
        s += "mkdir \"$R/proc\" \"$R/sys\" \"$R/tmp\" \"$R/dev\" \"$R/opt\" \"$R/mnt\"\n";
        s += "mount --rbind /proc \"$R/proc\"\nmount --rbind /sys \"$R/sys\"\n";
        s += "mount -t tmpfs -o mode=1777 tmpfs \"$R/tmp\"\n";
        s += "mount -t tmpfs -o mode=755 tmpfs \"$R/dev\"\n";
        for d in ["null", "zero", "full", "random", "urandom", "tty"] {
            s += &format!("touch \"$R/dev/{d}\" && mount --bind /dev/{d} \"$R/dev/{d}\"\n");
        }
        s += "ln -s /proc/self/fd \"$R/dev/fd\"\nln -s /proc/self/fd/0 \"$R/dev/stdin\"\n";
        s += "ln -s /proc/self/fd/1 \"$R/dev/stdout\"\nln -s /proc/self/fd/2 \"$R/dev/stderr\"\n";
        s += "mkdir \"$R/dev/shm\" && mount -t tmpfs -o mode=1777 tmpfs \"$R/dev/shm\"\n";
        for p in self.shared.iter() {
            let p = q(&p.display().to_string());
            s += &format!("mkdir -p \"$R\"{p} && mount --bind {p} \"$R\"{p}\n");
        }
        for (host, inside, ro, file) in binds {
            let (h, i) = (q(&host.display().to_string()), q(inside));
            if *file {
                s += &format!("mkdir -p \"$(dirname \"$R\"{i})\" && touch \"$R\"{i}\n");
            } else {
                s += &format!("mkdir -p \"$R\"{i}\n");
            }
            s += &format!("mount --bind {h} \"$R\"{i}\n");
            if *ro {
                s += &format!("mount -o remount,bind,ro \"$R\"{i}\n");
            }
        }
        // Positional parameters: ENV assignments, then the container's argv (env -i takes
        // the first word without `=` as the program).
        s += "cd \"$R\"\nexec chroot \"$R\" /usr/bin/env -i \"$@\"\n";
        s
    }
}
