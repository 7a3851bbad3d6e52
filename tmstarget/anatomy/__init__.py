"""The patient's anatomy: head motion, slice timing, registration (EPI -> T1 -> MNI) and the scalp surface."""
