"""Many tenants' models on one machine or scheduler: fleet file, triggers, run state, controller."""
