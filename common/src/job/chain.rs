//! Chaining: fusing vertices into tasks, as Flink does.
//!
//! An edge is chained — its two vertices run in one task, the upstream operator calling the downstream one
//! directly, with no queue and no serialization — when all of these hold:
//! - it is FORWARD (so the parallelisms are equal) and carries the main output, not a side output,
//! - the downstream vertex has exactly one input,
//! - the upstream vertex has exactly one output.
//!
//! Every other edge crosses chains and goes through the network stack. Chains are numbered in topological
//! order of their heads; the pass visits each vertex once.
//!
//! ```
//! # use sluice_common::job::{parse_job_file, validate};
//! let job = validate(parse_job_file(br#"{"vertices": [
//!     {"id": "gen", "parallelism": 2, "datagen": {"columns": [{"name": "x", "random_int": {"max": 9}}]}},
//!     {"id": "keep", "parallelism": 2, "filter": {"predicate": "x > 3"}},
//!     {"id": "sink", "parallelism": 1, "print_sink": {}}],
//!   "edges": [{"from": "gen", "to": "keep"}, {"from": "keep", "to": "sink"}]}"#).unwrap()).unwrap();
//! let chains: Vec<_> = job.chains.iter().map(|c| c.vertex_ids.join(" -> ")).collect();
//! assert_eq!(chains, ["gen -> keep", "sink"]); // keep -> sink changes parallelism: REBALANCE
//! ```
use std::collections::HashMap;

use crate::proto::{Chain, ChainEdge, JobGraph, Partitioning};

/// Chains of `graph` (validated, edges resolved), visiting vertices in the topological `order`.
pub fn build_chains(graph: &JobGraph, order: &[usize]) -> (Vec<Chain>, Vec<ChainEdge>) {
    let mut in_degree: HashMap<&str, usize> = HashMap::new();
    let mut out_degree: HashMap<&str, usize> = HashMap::new();
    for edge in &graph.edges {
        *in_degree.entry(edge.to.as_str()).or_default() += 1;
        *out_degree.entry(edge.from.as_str()).or_default() += 1;
    }
    let chained = |edge: &crate::proto::Edge| {
        edge.partitioning() == Partitioning::Forward
            && edge.side_output.is_empty()
            && in_degree.get(edge.to.as_str()) == Some(&1)
            && out_degree.get(edge.from.as_str()) == Some(&1)
    };

    let mut chains: Vec<Chain> = Vec::new();
    let mut chain_of: HashMap<&str, u32> = HashMap::new();
    for &i in order {
        let vertex = &graph.vertices[i];
        let upstream = graph
            .edges
            .iter()
            .find(|e| e.to == vertex.id && chained(e))
            .and_then(|e| chain_of.get(e.from.as_str()).copied());
        let chain = match upstream {
            Some(chain) => {
                chains[chain as usize].vertex_ids.push(vertex.id.clone());
                chain
            }
            None => {
                let index = chains.len() as u32;
                chains.push(Chain { index, vertex_ids: vec![vertex.id.clone()], parallelism: vertex.parallelism });
                index
            }
        };
        chain_of.insert(vertex.id.as_str(), chain);
    }
    let chain_edges = graph
        .edges
        .iter()
        .enumerate()
        .filter(|(_, e)| !chained(e))
        .filter_map(|(index, e)| {
            Some(ChainEdge {
                edge: index as u32,
                from_chain: *chain_of.get(e.from.as_str())?,
                to_chain: *chain_of.get(e.to.as_str())?,
            })
        })
        .collect();
    (chains, chain_edges)
}
