//! Step 0 of validation: the sizes a job file controls, against the bounds in [`crate::job::bounds`].
//!
//! It runs first and alone: when a count or a name is over its bound, the later steps are skipped, so
//! that their cost (and the length of their messages, which quote ids) stays bounded by what passed here.
use crate::job::bounds::{check_name_length, EDGES_MAX, VERTICES_MAX};
use crate::proto::JobGraph;

/// Reports every count and name over its bound; true when there was none.
pub(super) fn check_sizes(graph: &JobGraph, problems: &mut Vec<String>) -> bool {
    let before = problems.len();
    if graph.vertices.len() > VERTICES_MAX {
        problems.push(format!("the job has {} vertices; the most allowed is {VERTICES_MAX}", graph.vertices.len()));
    }
    if graph.edges.len() > EDGES_MAX {
        problems.push(format!("the job has {} edges; the most allowed is {EDGES_MAX}", graph.edges.len()));
    }
    if problems.len() > before {
        return false; // Counts over their bound: looking at every vertex would be the cost we refuse.
    }
    problems.extend(check_name_length("name", &graph.name));
    for (index, vertex) in graph.vertices.iter().enumerate() {
        problems.extend(check_name_length(&format!("vertices[{index}].id"), &vertex.id));
    }
    for (index, edge) in graph.edges.iter().enumerate() {
        problems.extend(check_name_length(&format!("edges[{index}].from"), &edge.from));
        problems.extend(check_name_length(&format!("edges[{index}].to"), &edge.to));
        problems.extend(check_name_length(&format!("edges[{index}].side_output"), &edge.side_output));
    }
    problems.len() == before
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::bounds::NAME_BYTES_MAX;
    use crate::proto::{Edge, Vertex};

    fn vertex(id: &str) -> Vertex {
        Vertex { id: id.to_string(), ..Default::default() }
    }

    #[test]
    fn vertex_and_edge_counts_are_bounded() {
        let mut graph =
            JobGraph { vertices: (0..=VERTICES_MAX).map(|i| vertex(&i.to_string())).collect(), ..Default::default() };
        let mut problems = Vec::new();
        assert!(!check_sizes(&graph, &mut problems));
        assert_eq!(problems, vec![format!("the job has 1001 vertices; the most allowed is {VERTICES_MAX}")]);

        graph.vertices.truncate(VERTICES_MAX);
        graph.edges = vec![Edge::default(); EDGES_MAX + 1];
        problems.clear();
        assert!(!check_sizes(&graph, &mut problems));
        assert_eq!(problems, vec![format!("the job has 4001 edges; the most allowed is {EDGES_MAX}")]);

        graph.edges.truncate(EDGES_MAX);
        problems.clear();
        assert!(check_sizes(&graph, &mut problems), "{problems:?}");
    }

    #[test]
    fn ids_endpoints_and_names_are_bounded_and_named() {
        let long = "v".repeat(NAME_BYTES_MAX + 1);
        let graph = JobGraph {
            name: long.clone(),
            vertices: vec![vertex(&long), vertex(&"w".repeat(NAME_BYTES_MAX))],
            edges: vec![Edge { from: long.clone(), to: "w".into(), side_output: long.clone(), ..Default::default() }],
            ..Default::default()
        };
        let mut problems = Vec::new();
        assert!(!check_sizes(&graph, &mut problems));
        let fields: Vec<&str> = problems.iter().filter_map(|p| p.split(' ').next()).collect();
        assert_eq!(fields, ["name", "vertices[0].id", "edges[0].from", "edges[0].side_output"], "{problems:?}");
        assert!(problems.iter().all(|p| p.ends_with("is 257 bytes long; the most allowed is 256")), "{problems:?}");
    }
}
