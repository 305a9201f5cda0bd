//! What goes on the wire: Celery's message and kombu's envelope
//! ([`celery`]), what Celery and SQS accept ([`limits`]), kombu's queue
//! names ([`queue`]), Celery's `argsrepr` ([`saferepr`](mod@saferepr)), Sentry
//! Crons' headers and check-ins ([`sentry`]), the seam the drivers send
//! through ([`sink`]), the intake contract ([`intake`]) and the seam intake
//! messages come through ([`source`]), and SQS itself ([`sqs`], with its
//! request signing in [`sigv4`]).

pub mod celery;
pub mod intake;
pub mod limits;
pub mod queue;
pub mod saferepr;
pub mod sentry;
pub mod sigv4;
pub mod sink;
pub mod source;
pub mod sqs;

use crate::config::Config;
use crate::wire::celery::BodyEncoding;

/// How task messages are built and addressed, from the config.
#[derive(Debug, Clone)]
pub struct MessageOptions {
    /// Celery's `origin` header: `sqsbeat@<host>`.
    pub origin: String,
    pub queue_name_prefix: String,
    pub body_encoding: BodyEncoding,
}

impl MessageOptions {
    pub fn from_config(config: &Config) -> Self {
        MessageOptions {
            origin: format!("sqsbeat@{}", gethostname::gethostname().to_string_lossy()),
            queue_name_prefix: config.sqs.queue_name_prefix.clone(),
            body_encoding: config.sqs.body_encoding,
        }
    }
}
