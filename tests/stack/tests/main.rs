//! End-to-end: a volume assembled by packs-assemble, served by attune-api, its
//! timer sensor run by attune-sensor, its actions run by attune-worker; and the
//! contracts of attune-contract against the whole checkout.

mod contracts;
mod flows;
