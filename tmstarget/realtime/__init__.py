"""Real-time front end: poll a scanner's export folder (`incoming`) and simulate one (`replay`)."""
