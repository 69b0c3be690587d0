//! A blocking client of the CRI v1 API over a unix socket: kubelet's side of the calls, for
//! the Kubernetes tests and the CRI bench (tonic underneath, on a runtime of its own).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use hyper_util::rt::TokioIo;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use tonic::transport::{Channel, Endpoint, Uri};

/// Every call gives up after this: a hung runtime fails the test instead of hanging it.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

pub struct CriClient {
    tokio: tokio::runtime::Runtime,
    pub runtime: RuntimeServiceClient<Channel>,
}

impl CriClient {
    /// Connects to the CRI server on `socket` (containerd's own socket serves it).
    pub fn connect(socket: &Path) -> Result<CriClient> {
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("cannot start the CRI client's tokio runtime")?;
        let path = socket.to_path_buf();
        let channel = tokio
            .block_on(async move {
                // The URI is required by tonic and ignored by the connector.
                Endpoint::try_from("http://[::]:50051")?
                        .timeout(CALL_TIMEOUT)
                        .connect_with_connector(tower::service_fn(move |_: Uri| {
                            let path: PathBuf = path.clone();
                            async move {
                                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
                            }
                        }))
                        .await
            })
            .with_context(|| format!("cannot connect to the CRI server on {}", socket.display()))?;
        Ok(CriClient { tokio, runtime: RuntimeServiceClient::new(channel) })
    }

    /// Runs one call (or several joined) to completion.
    pub fn block_on<F: Future>(&self, call: F) -> F::Output {
        self.tokio.block_on(call)
    }

    /// Spawns `call` on the client's runtime, so that many run at once.
    pub fn spawn<F>(&self, call: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tokio.spawn(call)
    }

    /// RunPodSandbox with `handler` ("" for the default runtime); the sandbox's id.
    pub fn run_pod(&self, config: &PodSandboxConfig, handler: &str) -> Result<String> {
        let request = RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: handler.to_string() };
        let mut runtime = self.runtime.clone();
        let response = self
            .block_on(runtime.run_pod_sandbox(request))
            .with_context(|| format!("RunPodSandbox of pod {} (handler {handler:?})", pod_name(config)))?;
        Ok(response.into_inner().pod_sandbox_id)
    }

    pub fn pod_status(&self, pod: &str) -> Result<PodSandboxStatus> {
        let mut runtime = self.runtime.clone();
        let request = PodSandboxStatusRequest { pod_sandbox_id: pod.to_string(), verbose: false };
        let response =
            self.block_on(runtime.pod_sandbox_status(request)).with_context(|| format!("PodSandboxStatus of {pod}"))?;
        response.into_inner().status.with_context(|| format!("PodSandboxStatus of {pod} has no status"))
    }

    /// The pod's IPv4 address on its network.
    pub fn pod_ip(&self, pod: &str) -> Result<String> {
        let status = self.pod_status(pod)?;
        let ip = status.network.map(|n| n.ip).unwrap_or_default();
        anyhow::ensure!(!ip.is_empty(), "pod {pod} has no IP");
        Ok(ip)
    }

    /// CreateContainer then StartContainer; the container's id.
    pub fn start_container(
        &self,
        pod: &str,
        pod_config: &PodSandboxConfig,
        config: &ContainerConfig,
    ) -> Result<String> {
        let id = self.create_container(pod, pod_config, config)?;
        let mut runtime = self.runtime.clone();
        let request = StartContainerRequest { container_id: id.clone() };
        self.block_on(runtime.start_container(request)).with_context(|| format!("StartContainer of {id}"))?;
        Ok(id)
    }

    pub fn create_container(
        &self,
        pod: &str,
        pod_config: &PodSandboxConfig,
        config: &ContainerConfig,
    ) -> Result<String> {
        let mut runtime = self.runtime.clone();
        let request = CreateContainerRequest {
            pod_sandbox_id: pod.to_string(),
            config: Some(config.clone()),
            sandbox_config: Some(pod_config.clone()),
        };
        let name = config.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default();
        let response = self
            .block_on(runtime.create_container(request))
            .with_context(|| format!("CreateContainer {name} in pod {pod}"))?;
        Ok(response.into_inner().container_id)
    }

    pub fn container_status(&self, id: &str) -> Result<ContainerStatus> {
        let mut runtime = self.runtime.clone();
        let request = ContainerStatusRequest { container_id: id.to_string(), verbose: false };
        let response =
            self.block_on(runtime.container_status(request)).with_context(|| format!("ContainerStatus of {id}"))?;
        response.into_inner().status.with_context(|| format!("ContainerStatus of {id} has no status"))
    }

    /// Polls ContainerStatus until the container has exited (at most `within`).
    pub fn wait_exited(&self, id: &str, within: Duration) -> Result<ContainerStatus> {
        let deadline = std::time::Instant::now() + within;
        loop {
            let status = self.container_status(id)?;
            if status.state == ContainerState::ContainerExited as i32 {
                return Ok(status);
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "container {id} still {:?} after {within:?}",
                ContainerState::try_from(status.state)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// ExecSync: (exit code, stdout, stderr).
    pub fn exec_sync(&self, id: &str, cmd: &[&str]) -> Result<(i32, String, String)> {
        let mut runtime = self.runtime.clone();
        let request = ExecSyncRequest {
            container_id: id.to_string(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: 30,
        };
        let response =
            self.block_on(runtime.exec_sync(request)).with_context(|| format!("ExecSync {cmd:?} in {id}"))?;
        let response = response.into_inner();
        let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
        Ok((response.exit_code, text(response.stdout), text(response.stderr)))
    }

    /// StopContainer with a grace period of `timeout` seconds.
    pub fn stop_container(&self, id: &str, timeout: i64) -> Result<()> {
        let mut runtime = self.runtime.clone();
        let request = StopContainerRequest { container_id: id.to_string(), timeout };
        self.block_on(runtime.stop_container(request)).with_context(|| format!("StopContainer of {id}"))?;
        Ok(())
    }

    pub fn remove_container(&self, id: &str) -> Result<()> {
        let mut runtime = self.runtime.clone();
        let request = RemoveContainerRequest { container_id: id.to_string() };
        self.block_on(runtime.remove_container(request)).with_context(|| format!("RemoveContainer of {id}"))?;
        Ok(())
    }

    pub fn update_resources(&self, id: &str, resources: LinuxContainerResources) -> Result<()> {
        let mut runtime = self.runtime.clone();
        let request = UpdateContainerResourcesRequest {
            container_id: id.to_string(),
            linux: Some(resources),
            ..Default::default()
        };
        self.block_on(runtime.update_container_resources(request))
            .with_context(|| format!("UpdateContainerResources of {id}"))?;
        Ok(())
    }

    /// StopPodSandbox then RemovePodSandbox.
    pub fn remove_pod(&self, pod: &str) -> Result<()> {
        let mut runtime = self.runtime.clone();
        self.block_on(runtime.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: pod.to_string() }))
            .with_context(|| format!("StopPodSandbox of {pod}"))?;
        self.block_on(runtime.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: pod.to_string() }))
            .with_context(|| format!("RemovePodSandbox of {pod}"))?;
        Ok(())
    }

    /// The ids of every pod sandbox the runtime has.
    pub fn list_pods(&self) -> Result<Vec<String>> {
        let mut runtime = self.runtime.clone();
        let response = self
            .block_on(runtime.list_pod_sandbox(ListPodSandboxRequest { filter: None }))
            .context("ListPodSandbox")?;
        Ok(response.into_inner().items.into_iter().map(|p| p.id).collect())
    }
}

fn pod_name(config: &PodSandboxConfig) -> String {
    config.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default()
}
