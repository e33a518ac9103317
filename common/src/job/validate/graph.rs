//! Steps 1 and 2 of validation: the vertices and edges on their own, before any schema.
use std::collections::{HashMap, HashSet, VecDeque};

use crate::job::hint;
use crate::job::operators::{operator_kind, role, Role, LATE_SIDE_OUTPUT, OPERATOR_KINDS};
use crate::proto::{JobGraph, Partitioning};

pub(super) fn check_vertices(graph: &JobGraph, max_parallelism: u32, problems: &mut Vec<String>) {
    if graph.vertices.is_empty() {
        problems.push("the job has no vertices".to_string());
    }
    let mut seen = HashSet::new();
    for (index, vertex) in graph.vertices.iter().enumerate() {
        let name = if vertex.id.is_empty() { format!("vertices[{index}]") } else { format!("vertex '{}'", vertex.id) };
        if vertex.id.is_empty() {
            problems.push(format!("{name}: missing 'id'"));
        } else if !seen.insert(vertex.id.as_str()) {
            problems.push(format!("{name}: duplicate vertex id"));
        }
        if vertex.parallelism == 0 {
            problems.push(format!("{name}: parallelism must be at least 1 (got 0 or missing)"));
        } else if vertex.parallelism > max_parallelism {
            problems.push(format!(
                "{name}: parallelism {} exceeds max_parallelism {max_parallelism} (the number of key groups)",
                vertex.parallelism
            ));
        }
        if vertex.operator.is_none() {
            problems.push(format!("{name}: no operator; give exactly one of: {}", OPERATOR_KINDS.join(", ")));
        }
    }
}

pub(super) fn resolve_edges(graph: &mut JobGraph, problems: &mut Vec<String>) {
    let ids: Vec<String> = graph.vertices.iter().map(|v| v.id.clone()).collect();
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let parallelism: HashMap<&str, u32> = graph.vertices.iter().map(|v| (v.id.as_str(), v.parallelism)).collect();
    let mut seen = HashSet::new();
    for (index, edge) in graph.edges.iter_mut().enumerate() {
        let name = format!("edge {} -> {} (edges[{index}])", edge.from, edge.to);
        let mut endpoints_known = true;
        for (role, id) in [("from", &edge.from), ("to", &edge.to)] {
            if !parallelism.contains_key(id.as_str()) {
                endpoints_known = false;
                problems.push(format!("{name}: '{role}' names unknown vertex '{id}'{}", hint(id, &id_refs)));
            }
        }
        if edge.from == edge.to && endpoints_known {
            problems.push(format!("{name}: an edge from a vertex to itself is a cycle"));
        }
        if !seen.insert((edge.from.clone(), edge.to.clone(), edge.side_output.clone())) {
            problems.push(format!("{name}: duplicate edge"));
        }
        let partitioning = edge.partitioning();
        if partitioning == Partitioning::Hash && edge.key.is_empty() {
            problems.push(format!("{name}: HASH partitioning needs a 'key' (the key columns)"));
        }
        if partitioning != Partitioning::Hash && !edge.key.is_empty() {
            problems.push(format!("{name}: 'key' is only meaningful with partitioning HASH"));
        }
        if !edge.side_output.is_empty() && edge.side_output != LATE_SIDE_OUTPUT {
            problems.push(format!(
                "{name}: unknown side output '{}'{}; the only side output is '{LATE_SIDE_OUTPUT}' (a window's late records)",
                edge.side_output,
                hint(&edge.side_output, &[LATE_SIDE_OUTPUT])
            ));
        }
        if !endpoints_known {
            continue;
        }
        let (p_from, p_to) = (parallelism[edge.from.as_str()], parallelism[edge.to.as_str()]);
        match partitioning {
            Partitioning::Unspecified => {
                edge.set_partitioning(if p_from == p_to { Partitioning::Forward } else { Partitioning::Rebalance })
            }
            Partitioning::Forward if p_from != p_to => problems.push(format!(
                "{name}: FORWARD needs equal parallelism on both ends (got {p_from} and {p_to}); use REBALANCE or HASH"
            )),
            _ => {}
        }
    }
}

/// Kahn's algorithm; also checks each vertex's inputs and outputs against its operator's role.
pub(super) fn topological_order(graph: &JobGraph, problems: &mut Vec<String>) -> Vec<usize> {
    let index: HashMap<&str, usize> = graph.vertices.iter().enumerate().map(|(i, v)| (v.id.as_str(), i)).collect();
    let n = graph.vertices.len();
    let mut inputs = vec![0usize; n];
    let mut outputs: Vec<Vec<usize>> = vec![Vec::new(); n];
    for edge in &graph.edges {
        let (from, to) = (index[edge.from.as_str()], index[edge.to.as_str()]);
        inputs[to] += 1;
        outputs[from].push(to);
    }
    let mut has_sink = false;
    for (i, vertex) in graph.vertices.iter().enumerate() {
        let Some(operator) = &vertex.operator else { continue };
        let kind = operator_kind(operator);
        let source = role(operator) == Role::Source;
        if source && inputs[i] > 0 {
            problems.push(format!("vertex '{}': a {kind} source cannot have inputs", vertex.id));
        }
        if !source && inputs[i] == 0 {
            problems.push(format!("vertex '{}': {kind} has no input; connect it with an edge", vertex.id));
        }
        if role(operator) == Role::Sink {
            has_sink = true;
            if !outputs[i].is_empty() {
                problems.push(format!("vertex '{}': a {kind} sink cannot have outputs", vertex.id));
            }
        } else if outputs[i].is_empty() {
            problems.push(format!("vertex '{}': its output goes nowhere; connect it to a sink", vertex.id));
        }
    }
    if !has_sink && n > 0 {
        problems.push("the job has no sink (file_sink, kafka_sink, print_sink or blackhole_sink)".to_string());
    }
    let mut remaining = inputs.clone();
    let mut ready: VecDeque<usize> = (0..n).filter(|&i| remaining[i] == 0).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(i) = ready.pop_front() {
        order.push(i);
        for &to in &outputs[i] {
            remaining[to] -= 1;
            if remaining[to] == 0 {
                ready.push_back(to);
            }
        }
    }
    if order.len() < n {
        let mut cyclic: Vec<&str> =
            (0..n).filter(|&i| remaining[i] > 0).map(|i| graph.vertices[i].id.as_str()).collect();
        cyclic.sort_unstable();
        problems.push(format!("the graph has a cycle through vertices: {}", cyclic.join(", ")));
    }
    order
}
