// name: attack_paths
// category: attack-path
// description: The k shortest attack paths per (entry, target) pair, in (cost, hops, node ids) order, in two modes. Entry and target ids are resolved from the site selectors by the caller with the policy engine ($entry_ids for devices, $external_entry_ids for External sources). Observed mode walks COMMUNICATES_WITH in the graph: intermediate nodes are Devices (entries and targets included), paths are simple, an edge costs 1.0, or 0.5 when its destination service is in $vulnerable ("device_id/proto/port" keys). Permitted mode depends on the policy, so the caller passes the permitted reachability graph that twin.analysis.attack_paths builds with the policy engine, over policy equivalence groups: $permitted_nodes maps a group id (its first member) to {members, entry, target, external}, $permitted_edges maps a group id to its out-edges [{dst, w}]; this query does the bounded path search over it, prunes nodes that cannot reach a target within the remaining hops, and expands entry and target groups to their members like the Python form.
// parameters: $site, $modes, $entry_ids, $external_entry_ids, $target_ids, $vulnerable, $permitted_nodes, $permitted_edges, $max_hops, $k, $max_paths
// limits: observed paths at most 12 hops (literal bound, the site configuration's maximum of max_hops, because Cypher takes no parameter in a variable-length pattern) and at most $max_hops; permitted paths at most $max_hops by bounded iteration; $k paths per (entry, target) pair; LIMIT $max_paths paths per mode
// cannot see: paths longer than $max_hops; pivots through External endpoints; links (LLDP/CDP) as edges; it enumerates every simple path within the hop bound, where the Python form stops after a search budget of expansions
// revision: 2
CALL () {
  MATCH (entry {site: $site})
  WHERE 'observed' IN $modes
    AND ((entry:Device AND NOT entry:Placeholder AND entry.device_id IN $entry_ids)
      OR (entry:External AND entry.address IN $external_entry_ids))
  MATCH p = (entry)-[:COMMUNICATES_WITH*1..12]->(target:Device)
  WHERE length(p) <= $max_hops
    AND target.device_id IN $target_ids
    AND all(n IN nodes(p)[1..] WHERE n:Device AND NOT n:Placeholder)
    AND all(i IN range(0, length(p) - 1) WHERE NOT nodes(p)[i] IN nodes(p)[i + 1..])
  WITH [n IN nodes(p) | coalesce(n.device_id, n.address)] AS ids,
       reduce(total = 0.0, r IN relationships(p) |
         total + CASE WHEN endNode(r).device_id + '/' + toLower(r.proto) + '/' + toString(r.dst_port) IN $vulnerable
                      THEN 0.5 ELSE 1.0 END) AS rel_cost
  // Several relationships (one per service) can join the same two nodes; a path costs its cheapest choice.
  WITH ids, min(rel_cost) AS cost
  WITH ids, cost, size(ids) - 1 AS hops
  ORDER BY cost, hops, ids
  WITH head(ids) AS entry_id, last(ids) AS target_id, collect({ids: ids, cost: cost, hops: hops}) AS ranked
  UNWIND ranked[..$k] AS found
  WITH found
  ORDER BY found.cost, found.hops, found.ids
  LIMIT $max_paths
  RETURN 'observed' AS mode, found.ids AS ids, found.cost AS cost, found.hops AS hops
  UNION ALL
  WITH $permitted_nodes AS groups, $permitted_edges AS adjacency
  WHERE 'permitted' IN $modes
  WITH groups, adjacency,
       [g IN keys(groups) WHERE groups[g].target] AS targets,
       [g IN keys(groups) WHERE NOT groups[g].external] AS passable
  // reach[r]: groups with a target within r hops through passable groups (reach[0] is empty).
  WITH groups, adjacency, targets, passable,
       reduce(reach = [[]], r IN range(1, $max_hops) |
         reach + [[g IN keys(groups) WHERE any(edge IN coalesce(adjacency[g], [])
                    WHERE edge.dst IN targets OR (edge.dst IN passable AND edge.dst IN reach[r - 1]))]]) AS reach
  UNWIND [g IN keys(groups) WHERE groups[g].entry AND g IN reach[$max_hops]] AS start
  WITH groups, adjacency, targets, passable, reach,
       reduce(state = {open: [{ids: [start], cost: 0.0}], done: []}, hop IN range(1, $max_hops) | {
         done: state.done + reduce(found = [], partial IN state.open | found +
           [edge IN coalesce(adjacency[last(partial.ids)], [])
             WHERE edge.dst IN targets
               AND (NOT edge.dst IN partial.ids OR (edge.dst = partial.ids[0] AND size(groups[edge.dst].members) >= 2))
             | {ids: partial.ids + edge.dst, cost: partial.cost + edge.w}]),
         open: reduce(found = [], partial IN state.open | found +
           [edge IN coalesce(adjacency[last(partial.ids)], [])
             WHERE hop < $max_hops AND edge.dst IN passable AND NOT edge.dst IN partial.ids
               AND edge.dst IN reach[$max_hops - hop]
             | {ids: partial.ids + edge.dst, cost: partial.cost + edge.w}])
       }) AS state
  UNWIND state.done AS group_path
  WITH groups, group_path, size(group_path.ids) - 1 AS hops
  UNWIND groups[head(group_path.ids)].members AS entry_id
  UNWIND groups[last(group_path.ids)].members AS target_id
  WITH group_path, hops, entry_id, target_id
  WHERE entry_id <> target_id
  // Members of one group path come in entry then target order, as the Python form expands them.
  ORDER BY group_path.cost, hops, group_path.ids, entry_id, target_id
  WITH entry_id, target_id, collect({ids: [entry_id] + group_path.ids[1..-1] + [target_id],
                                     cost: group_path.cost, hops: hops, order: [group_path.ids, [entry_id, target_id]]}) AS ranked
  UNWIND ranked[..$k] AS found
  WITH found
  ORDER BY found.cost, found.hops, found.order
  LIMIT $max_paths
  RETURN 'permitted' AS mode, found.ids AS ids, found.cost AS cost, found.hops AS hops
}
WITH mode, ids, cost, hops
ORDER BY mode, cost, hops, ids
WITH mode, collect({ids: ids, cost: cost, hops: hops}) AS paths
UNWIND range(0, size(paths) - 1) AS number
WITH mode, number, paths[number] AS found
CALL (found) {
  UNWIND found.ids AS node_id
  OPTIONAL MATCH (d:Device {site: $site, device_id: node_id})
  RETURN collect(coalesce(CASE WHEN d.hostname <> '' THEN d.hostname END,
                          CASE WHEN head(d.ips) <> '' THEN head(d.ips) END, node_id)) AS names
}
OPTIONAL MATCH (entry:Device {site: $site, device_id: head(found.ids)})
OPTIONAL MATCH (target:Device {site: $site, device_id: last(found.ids)})
WITH mode, number, found, names, entry, target,
     CASE coalesce(target.criticality, 'low')
       WHEN 'life_critical' THEN 0 WHEN 'high' THEN 1 WHEN 'medium' THEN 2 ELSE 3
     END + CASE WHEN mode = 'permitted' THEN 1 ELSE 0 END AS level
RETURN mode,
       mode + '-' + substring('00000', size(toString(number + 1))) + toString(number + 1) AS path_id,
       head(found.ids) AS entry_id,
       CASE WHEN entry.hostname <> '' THEN entry.hostname END AS entry_hostname,
       last(found.ids) AS target_id,
       CASE WHEN target.hostname <> '' THEN target.hostname END AS target_hostname,
       coalesce(target.device_class, 'unknown') AS target_class,
       found.hops AS hops,
       found.cost AS cost,
       found.ids AS path,
       names AS path_hostnames,
       ['critical', 'high', 'medium', 'low', 'info'][level] AS severity,
       reduce(text = head(names), name IN tail(names) | text + ' -> ' + name) + ': ' + toString(found.hops)
         + CASE WHEN found.hops = 1 THEN ' hop' ELSE ' hops' END + ', cost '
         + CASE WHEN found.cost = toInteger(found.cost) THEN toString(toInteger(found.cost)) ELSE toString(found.cost) END
         + ', over ' + CASE mode WHEN 'observed' THEN 'observed communications' ELSE 'services the policy permits' END
         AS evidence
ORDER BY mode, number
LIMIT 200000
