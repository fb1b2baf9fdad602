//! Ferry mode, for zones joined only by a one-way device: the exporting gateway writes batch files
//! ([`file`]) that the link carries, the importing gateway in the other zone reads them. The same
//! promises hold as over the network: every message once, in order, judged by the policy.

mod durable;
pub mod export;
pub mod file;
pub mod import;
