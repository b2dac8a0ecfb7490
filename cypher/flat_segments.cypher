// name: flat_segments
// category: segmentation
// description: Segments that hold both medical devices and general IT devices, with the count of each. A device is medical or IT by its role, or by its class when the role is empty.
// parameters: $medical_classes, $it_classes
// limits: no paths; LIMIT 10000 rows
// cannot see: devices without a segment; host firewalls or private VLANs inside a segment
// revision: 1
MATCH (d:Device)-[:IN_SEGMENT]->(s:Segment)
WITH s, d,
     CASE
       WHEN d.role IS NOT NULL THEN d.role
       WHEN d.device_class IN $medical_classes THEN 'medical'
       WHEN d.device_class IN $it_classes THEN 'it'
       ELSE 'other'
     END AS kind
WITH s,
     sum(CASE WHEN kind = 'medical' THEN 1 ELSE 0 END) AS medical_devices,
     sum(CASE WHEN kind = 'it' THEN 1 ELSE 0 END) AS it_devices,
     sum(CASE WHEN kind <> 'medical' AND kind <> 'it' THEN 1 ELSE 0 END) AS other_devices,
     collect(DISTINCT CASE WHEN kind = 'medical' THEN d.device_class END) AS medical_classes,
     collect(DISTINCT CASE WHEN kind = 'it' THEN d.device_class END) AS it_classes,
     sum(CASE WHEN kind = 'medical' AND d.criticality = 'life_critical' THEN 1 ELSE 0 END) AS life_critical
WHERE medical_devices > 0 AND it_devices > 0
RETURN s.segment_id AS segment_id, s.zone AS zone, medical_devices, it_devices, other_devices,
       medical_classes, it_classes,
       CASE
         WHEN life_critical > 0 AND it_devices >= medical_devices THEN 'critical'
         WHEN life_critical > 0 THEN 'high'
         ELSE 'medium'
       END AS severity
ORDER BY segment_id
LIMIT 10000
