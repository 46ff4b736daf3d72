//! `keyward.v1.Encryption`: which provider and key encrypt the stored data (coverage), and
//! migration of stale data to the write key, streamed as progress.

use tonic::{Request, Response, Status};

use super::frontend::{access_status, Frontend};
use crate::pb::keyward_v1 as pb;

/// `keyward.v1.Encryption`: coverage and migration.
#[derive(Debug, Clone)]
pub struct EncryptionService {
    front: Frontend,
}

impl EncryptionService {
    /// A service over the guarded store of `front`.
    pub fn new(front: Frontend) -> Self {
        Self { front }
    }

    /// The tonic server for this service.
    pub fn into_server(self) -> pb::encryption_server::EncryptionServer<Self> {
        pb::encryption_server::EncryptionServer::new(self)
    }
}

fn progress_pb(p: &crate::store::migrate::MigrateProgress, finished: bool) -> pb::MigrateProgress {
    pb::MigrateProgress {
        total: p.total as i64,
        done: p.done as i64,
        rewritten: p.rewritten as i64,
        conflicts: p.conflicts as i64,
        failed: p.failed as i64,
        last_key: p.last_key.clone(),
        finished,
    }
}

type ProgressStream = std::pin::Pin<
    Box<dyn futures_core::Stream<Item = Result<pb::MigrateProgress, Status>> + Send + 'static>,
>;

#[tonic::async_trait]
impl pb::encryption_server::Encryption for EncryptionService {
    async fn status(
        &self,
        req: Request<pb::EncryptionStatusRequest>,
    ) -> Result<Response<pb::EncryptionStatusResponse>, Status> {
        let ctx = self
            .front
            .context(&req, "/keyward.v1.Encryption/Status")
            .await?;
        let status = self
            .front
            .access
            .encryption_status(
                &ctx,
                req.get_ref().all_objects,
                req.get_ref().include_history,
            )
            .await
            .map_err(access_status)?;
        let history_kms_key_ids = status
            .history_kms_key_ids
            .into_iter()
            .map(|(id, n)| (id, n as i64))
            .collect();
        let (cov, wp, wk) = (status.coverage, status.write_provider, status.write_key);
        Ok(Response::new(pb::EncryptionStatusResponse {
            revision: cov.revision.get(),
            total: cov.total as i64,
            stale: cov.stale as i64,
            undecryptable: cov.undecryptable as i64,
            counts: cov
                .by_key
                .into_iter()
                .map(
                    |((provider, key_name), (objects, stale))| pb::ProviderCount {
                        provider,
                        key_name,
                        objects: objects as i64,
                        stale: stale as i64,
                    },
                )
                .collect(),
            kms_key_ids: cov.kms_key_ids,
            write_provider: wp,
            write_key: wk,
            objects: cov
                .objects
                .into_iter()
                .map(|o| pb::ObjectEncryption {
                    key: o.key,
                    mod_revision: o.mod_revision.get(),
                    provider: o.provider,
                    key_name: o.key_name,
                    stale: o.stale,
                    error: o.error.unwrap_or_default(),
                })
                .collect(),
            history_kms_key_ids,
        }))
    }

    type MigrateStream = ProgressStream;

    async fn migrate(
        &self,
        req: Request<pb::MigrateRequest>,
    ) -> Result<Response<Self::MigrateStream>, Status> {
        let ctx = self
            .front
            .context(&req, "/keyward.v1.Encryption/Migrate")
            .await?;
        let req = req.into_inner();
        if req.batch_size < 0 || !(req.rate >= 0.0 && req.rate.is_finite()) {
            return Err(super::bad_request(
                "batch_size and rate: must be 0 (default) or positive",
            ));
        }
        if req.rate > 0.0 && req.rate < crate::store::migrate::MIN_RATE {
            return Err(super::bad_request(format!(
                "rate: must be 0 (unlimited) or at least {} rewrites per second",
                crate::store::migrate::MIN_RATE
            )));
        }
        let opts = crate::store::migrate::MigrateOptions {
            dry_run: req.dry_run,
            batch: if req.batch_size == 0 {
                256
            } else {
                req.batch_size as usize
            },
            rate: req.rate,
        };
        let migration = self
            .front
            .access
            .migrate(&ctx)
            .await
            .map_err(access_status)?;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            let progress_tx = tx.clone();
            // A caller that goes away (Ctrl-C, a killed client) stops the migration instead
            // of leaving it running, and holding off every other, unseen: what it rewrote
            // stays rewritten, and a rerun finishes the job.
            let gone = tx.clone();
            let res = migration
                .run_until(
                    opts,
                    move |p| {
                        let _ = progress_tx.try_send(Ok(progress_pb(p, false)));
                    },
                    async move { gone.closed().await },
                )
                .await;
            let last = match res {
                Ok(p) => Ok(progress_pb(&p, true)),
                Err(e) => Err(access_status(e)),
            };
            let _ = tx.send(last).await;
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}
