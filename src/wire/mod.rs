//! What goes on the wire: Celery's message and kombu's envelope
//! ([`celery`]), kombu's queue names ([`queue`]) and SQS itself ([`sqs`]).

pub mod celery;
pub mod queue;
pub mod sqs;
