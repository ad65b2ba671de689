//! End-to-end: a volume assembled by packs-assemble, served by attune-api, its
//! timer sensor run by attune-sensor, its actions run by attune-worker.

mod flows;
