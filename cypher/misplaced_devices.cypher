// name: misplaced_devices
// category: segmentation
// description: Devices whose device_class is not in the designated_classes of their segment; a segment with an empty list accepts every class.
// parameters: $medical_classes, $exposed_zones, $clinical_zones
// limits: no paths; LIMIT 10000 rows
// cannot see: devices without a segment; misclassified devices are judged by their wrong class
// revision: 1
MATCH (d:Device)-[:IN_SEGMENT]->(s:Segment)
WHERE size(s.designated_classes) > 0
  AND NOT d.device_class IN s.designated_classes
WITH d, s, (d.role = 'medical' OR d.device_class IN $medical_classes) AS medical
RETURN d.device_id AS device_id,
       d.hostname AS hostname,
       head(d.ips) AS ip,
       d.device_class AS device_class,
       s.segment_id AS segment_id,
       s.zone AS zone,
       s.designated_classes AS designated_classes,
       CASE
         WHEN d.device_class = 'unknown' THEN 'info'
         WHEN medical AND (s.zone IN $exposed_zones OR s.trust = 'untrusted') THEN 'critical'
         WHEN medical AND NOT s.zone IN $clinical_zones THEN 'high'
         WHEN d.criticality = 'life_critical' THEN 'high'
         WHEN d.criticality = 'high' OR (NOT medical AND s.zone IN $clinical_zones) THEN 'medium'
         ELSE 'low'
       END AS severity
ORDER BY segment_id, device_id
LIMIT 10000
