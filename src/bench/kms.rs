//! `bench kms`: Status, Encrypt, Decrypt, a mix of them, or the gRPC health check of any KMS
//! v2 plugin over its Unix socket; and the decrypt storm of an apiserver restart.

use std::collections::BTreeMap;
use std::sync::Arc;

use tonic::transport::Channel;
use tonic::Status;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use super::report::Size;
use super::{
    drive, payload, prepare_error, setup, timed, BenchError, Load, Progress, Report, Stop, Worker,
};
use crate::pb::kms_v2 as kpb;
use crate::uds::UnixTarget;
use kpb::key_management_service_client::KeyManagementServiceClient;

/// Distinct payloads encrypted before a decrypt or mixed run.
const DECRYPT_POOL: u64 = 256;

/// The call `bench kms` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KmsOp {
    /// `Status`.
    Status,
    /// `Encrypt` of the payload.
    Encrypt,
    /// `Decrypt` of ciphertexts prepared before the run.
    Decrypt,
    /// 1 Encrypt : 9 Decrypt, with 1 call in 100 a Status.
    Mixed,
    /// grpc.health.v1 Health/Check (service ""): the empty-RPC floor on the same server.
    Health,
}

impl KmsOp {
    /// Its name in reports: `status`, `encrypt`, `decrypt`, `mixed` or `health`.
    pub fn name(self) -> &'static str {
        match self {
            KmsOp::Status => "status",
            KmsOp::Encrypt => "encrypt",
            KmsOp::Decrypt => "decrypt",
            KmsOp::Mixed => "mixed",
            KmsOp::Health => "health",
        }
    }
}

/// What `bench kms` calls, and with what.
#[derive(Debug, Clone)]
pub struct KmsBench {
    /// The plugin's socket: a file or an abstract socket.
    pub socket: UnixTarget,
    /// The call to measure (ignored in a storm, which decrypts).
    pub op: KmsOp,
    /// Plaintext bytes per Encrypt.
    pub payload: usize,
    /// Reproduce an apiserver restart: encrypt this many distinct payloads (untimed), then
    /// decrypt them all as fast as possible; the report gives the time to finish.
    pub storm: Option<u64>,
}

/// A payload encrypted before the run, decrypted during it.
struct Sealed {
    plaintext: Vec<u8>,
    ciphertext: Vec<u8>,
    key_id: String,
    annotations: BTreeMap<String, Vec<u8>>,
}

type KmsClient = KeyManagementServiceClient<Channel>;

struct KmsWorker {
    client: KmsClient,
    health: HealthClient<Channel>,
    op: KmsOp,
    plaintext: Arc<Vec<u8>>,
    pool: Arc<Vec<Sealed>>,
}

impl KmsWorker {
    async fn encrypt(&mut self) -> Result<(), Status> {
        self.client
            .encrypt(kpb::EncryptRequest {
                plaintext: self.plaintext.to_vec(),
                uid: uuid::Uuid::new_v4().to_string(),
            })
            .await
            .map(drop)
    }

    async fn decrypt(&mut self, n: u64) -> Result<(), Status> {
        let s = &self.pool[(n % self.pool.len() as u64) as usize];
        let got = self
            .client
            .decrypt(kpb::DecryptRequest {
                ciphertext: s.ciphertext.clone(),
                uid: uuid::Uuid::new_v4().to_string(),
                key_id: s.key_id.clone(),
                annotations: s.annotations.clone(),
            })
            .await?
            .into_inner();
        if got.plaintext != s.plaintext {
            return Err(Status::data_loss("Decrypt returned a different plaintext"));
        }
        Ok(())
    }

    async fn status(&mut self) -> Result<(), Status> {
        self.client.status(kpb::StatusRequest {}).await.map(drop)
    }

    /// grpc.health.v1 Health/Check of the server as a whole (service ""); anything but SERVING
    /// counts as Unavailable.
    async fn health(&mut self) -> Result<(), Status> {
        let r = self
            .health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await?
            .into_inner();
        if r.status != ServingStatus::Serving as i32 {
            return Err(Status::unavailable(format!(
                "health: the plugin is not SERVING (status {})",
                r.status
            )));
        }
        Ok(())
    }
}

impl Worker for KmsWorker {
    async fn call(&mut self, n: u64) -> Result<(), Status> {
        match self.op {
            KmsOp::Status => self.status().await,
            KmsOp::Encrypt => self.encrypt().await,
            KmsOp::Decrypt => self.decrypt(n).await,
            KmsOp::Health => self.health().await,
            KmsOp::Mixed if n % 100 == 99 => self.status().await,
            KmsOp::Mixed if n % 10 == 0 => self.encrypt().await,
            KmsOp::Mixed => self.decrypt(n).await,
        }
    }
}

/// Runs `bench kms` against the plugin at `b.socket`; `progress` follows the run.
pub async fn run(mut load: Load, b: &KmsBench, progress: &Progress) -> Result<Report, BenchError> {
    let (socket, size, storm) = (&b.socket, b.payload, b.storm);
    let endpoint = socket.to_string();
    let mut channels = Vec::with_capacity(load.connections);
    for _ in 0..load.connections {
        let ch = crate::uds::channel(socket.clone())
            .await
            .map_err(|e| BenchError::Connect {
                target: "the KMS plugin",
                endpoint: endpoint.clone(),
                detail: e.to_string(),
            })?;
        channels.push(ch);
    }
    let clients: Vec<KmsClient> = channels.iter().cloned().map(KmsClient::new).collect();
    let op = if storm.is_some() {
        KmsOp::Decrypt
    } else {
        b.op
    };
    let pool_size = match (storm, op) {
        (Some(n), _) => n,
        (None, KmsOp::Decrypt | KmsOp::Mixed) => DECRYPT_POOL,
        (None, _) => 0,
    };
    if let Some(n) = storm {
        load.stop = Stop::Requests(n);
    }
    let setup_clients = clients.clone();
    let timeout = load.timeout;
    let pool = setup(pool_size, load.concurrency, progress, move |i| {
        let mut c = setup_clients[i as usize % setup_clients.len()].clone();
        async move {
            let plaintext = payload(size, i)?;
            let call = c.encrypt(kpb::EncryptRequest {
                plaintext: plaintext.clone(),
                uid: uuid::Uuid::new_v4().to_string(),
            });
            let r = timed(timeout, call)
                .await
                .map_err(prepare_error("ciphertexts", "Encrypt"))?
                .into_inner();
            Ok(Sealed {
                plaintext,
                ciphertext: r.ciphertext,
                key_id: r.key_id,
                annotations: r.annotations,
            })
        }
    })
    .await?;
    let pool = Arc::new(pool);
    let plaintext = Arc::new(payload(size, 0)?);
    let workers: Vec<KmsWorker> = (0..load.concurrency)
        .map(|i| KmsWorker {
            client: clients[i % clients.len()].clone(),
            health: HealthClient::new(channels[i % channels.len()].clone()),
            op,
            plaintext: plaintext.clone(),
            pool: pool.clone(),
        })
        .collect();
    let outcome = drive(workers, &load, progress).await?;
    Ok(Report {
        target: "kms",
        endpoint,
        op: if storm.is_some() {
            "decrypt storm".into()
        } else {
            op.name().into()
        },
        load,
        // Status and health calls carry no payload.
        size: matches!(op, KmsOp::Encrypt | KmsOp::Decrypt | KmsOp::Mixed).then_some(Size {
            json: "payload_bytes",
            label: "payload",
            bytes: size,
        }),
        counts: storm.map(|n| ("storm", n)).into_iter().collect(),
        outcome,
    })
}
