// name: choke_points
// category: attack-path
// description: Devices, segment pairs and minimum-cut deny rules ranked by the attack paths they cut, over the rows of attack_paths.cypher passed as $paths ({mode, ids, critical}). The minimum edge cut needs a max-flow computation that Cypher cannot express, so the caller computes it with networkx over the union of the paths and passes the cut edges as $min_cut ([u, v] pairs); the services of permitted-mode edges depend on the policy, so the caller passes them as $permitted_services ({src, dst, services}). Segments, names, observed services, counts, shares, severities and text are computed here.
// parameters: $site, $paths, $min_cut, $permitted_services
// limits: no variable-length paths; works on at most the attack_paths rows passed in; LIMIT 100000 rows
// cannot see: paths that attack_paths did not report (its caps bound the counts and the cut)
// revision: 3
// Rows carry counts, never the whole path list: every sorted or aggregated row would hold its own copy.
WITH size($paths) AS total, size([p IN $paths WHERE p.critical]) AS critical_total
WHERE total > 0
UNWIND $paths AS path
UNWIND range(0, size(path.ids) - 1) AS position
WITH total, critical_total, path, position, path.ids[position] AS node_id
OPTIONAL MATCH (d:Device {site: $site, device_id: node_id})
WITH total, critical_total, path, position, node_id,
     CASE WHEN d IS NULL OR d:Placeholder THEN 'internet' ELSE coalesce(d.segment_id, 'no segment') END AS segment,
     CASE WHEN d IS NULL OR d:Placeholder THEN node_id
          ELSE coalesce(CASE WHEN d.hostname <> '' THEN d.hostname END, CASE WHEN head(d.ips) <> '' THEN head(d.ips) END, node_id) END AS name
ORDER BY position
WITH total, critical_total, path, collect({id: node_id, segment: segment, name: name}) AS hops
CALL (total, critical_total, path, hops) {
  // device rows: intermediate nodes, counted once per path
  UNWIND hops[1..-1] AS hop
  WITH DISTINCT hop
  RETURN 'device' AS kind, hop.id AS item, hop AS info, [] AS edges
  UNION ALL
  // segment-pair rows: the pairs of the path's edges, counted once per path
  UNWIND range(0, size(hops) - 2) AS i
  RETURN 'segment_pair' AS kind, hops[i].segment + ' -> ' + hops[i + 1].segment AS item,
         {src: hops[i].segment, dst: hops[i + 1].segment} AS info,
         [[path.mode, hops[i].id, hops[i + 1].id]] AS edges
  UNION ALL
  // minimum-cut rows: the cut edges on this path, grouped by segment pair
  UNWIND range(0, size(hops) - 2) AS i
  WITH hops, i
  WHERE [hops[i].id, hops[i + 1].id] IN $min_cut
  RETURN 'min_cut_rule' AS kind, hops[i].segment + ' -> ' + hops[i + 1].segment AS item,
         {src: hops[i].segment, dst: hops[i + 1].segment} AS info,
         [[path.mode, hops[i].id, hops[i + 1].id, hops[i].name, hops[i + 1].name]] AS edges
}
WITH total, critical_total, kind, item, path, head(collect(info)) AS info, collect(edges) AS edge_lists
WITH total, critical_total, kind, item, info,
     count(path) AS paths_through, sum(CASE WHEN path.critical THEN 1 ELSE 0 END) AS critical_through,
     reduce(all_edges = [], e IN collect(edge_lists) | all_edges + reduce(flat = [], x IN e | flat + x)) AS edges
// One row per distinct edge of a row, so the edge list itself is not copied into every edge row.
UNWIND CASE WHEN size(edges) = 0 THEN [NULL] ELSE edges END AS edge
WITH DISTINCT total, critical_total, kind, item, info, paths_through, critical_through, edge
OPTIONAL MATCH (v:Device {site: $site, device_id: edge[2]})<-[c:COMMUNICATES_WITH]-(u)
WHERE edge[0] = 'observed' AND coalesce(u.device_id, u.address) = edge[1]
WITH total, critical_total, kind, item, info, paths_through, critical_through, edge,
     collect(c.proto + '/' + toString(c.dst_port)) AS observed_labels
WITH total, critical_total, kind, item, info, paths_through, critical_through, edge,
     observed_labels + coalesce(head([s IN $permitted_services WHERE edge[0] = 'permitted' AND s.src = edge[1] AND s.dst = edge[2] | s.services]), []) AS labels
UNWIND CASE WHEN size(labels) = 0 THEN [NULL] ELSE labels END AS label
WITH total, critical_total, kind, item, info, paths_through, critical_through, edge, label
ORDER BY label
WITH total, critical_total, kind, item, info, paths_through, critical_through,
     collect(DISTINCT label) AS labels, collect(DISTINCT edge) AS edges
WITH total, critical_total, kind, item, info, paths_through, critical_through, labels, edges,
     reduce(text = head(labels), s IN tail(labels) | text + ', ' + s) AS services_text,
     toFloat(paths_through) / total AS share
// the cut edges of a min_cut_rule row, distinct and sorted
UNWIND CASE WHEN kind = 'min_cut_rule' THEN edges ELSE [NULL] END AS cut_edge
WITH total, critical_total, kind, item, info, paths_through, critical_through, services_text, share, cut_edge
ORDER BY cut_edge[1], cut_edge[2]
WITH total, critical_total, kind, item, info, paths_through, critical_through, services_text, share,
     collect(DISTINCT CASE WHEN cut_edge IS NOT NULL THEN [cut_edge[1], cut_edge[2], cut_edge[3], cut_edge[4]] END) AS cut_edges
RETURN kind,
       item,
       paths_through,
       share,
       CASE kind
         WHEN 'device' THEN 'isolate or harden ' + info.name + ' (segment ' + info.segment
              + '): restrict its listening services and who may reach them'
         WHEN 'segment_pair' THEN CASE WHEN info.src = info.dst THEN 'micro-segment' ELSE 'deny' END
              + ' traffic from segment ' + info.src + ' to segment ' + info.dst + ' (services: '
              + coalesce(services_text, 'none recorded') + ')'
         ELSE 'add deny rule from segment:' + info.src + ' to segment:' + info.dst + ' for '
              + coalesce(services_text, 'the services these edges use')
       END AS recommendation,
       CASE
         WHEN kind = 'min_cut_rule' THEN 'high'
         WHEN share >= 1.0 AND critical_total > 0 AND critical_through = critical_total THEN 'critical'
         WHEN share >= 0.5 THEN 'high'
         WHEN share >= 0.2 THEN 'medium'
         ELSE 'low'
       END AS severity,
       CASE kind
         WHEN 'device' THEN toString(paths_through) + ' of ' + toString(total) + ' attack paths pass through ' + info.name
         WHEN 'segment_pair' THEN toString(paths_through) + ' of ' + toString(total) + ' attack paths use an edge from '
              + info.src + ' to ' + info.dst
         ELSE 'part of a minimum cut of ' + toString(size($min_cut)) + ' edges between all entries and all targets; cuts edges '
              + reduce(text = '', e IN cut_edges[..5] | text + CASE WHEN text = '' THEN '' ELSE ', ' END + e[2] + ' -> ' + e[3])
              + CASE WHEN size(cut_edges) > 5 THEN ' ...' ELSE '' END
       END AS evidence
ORDER BY CASE kind WHEN 'min_cut_rule' THEN 0 WHEN 'segment_pair' THEN 1 ELSE 2 END, paths_through DESC, item
LIMIT 100000
