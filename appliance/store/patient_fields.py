"""Who an image belongs to, in SQL: what the device sent, else what staff typed.

Kept apart from store/patients.py (which writes them) so any query can use them without
importing the writers.
"""

PATIENT_ID_SQL = "COALESCE(NULLIF(s.patient_id, ''), s.entered_patient_id)"
PATIENT_NAME_SQL = "COALESCE(NULLIF(s.patient_name, ''), s.entered_patient_name)"
