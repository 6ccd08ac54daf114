"""Files and the Batch API: uploaded files behind a small storage interface, batch records in Redis, and
the batch driver that feeds batch lines into each pool's batch lane and collects their results."""
