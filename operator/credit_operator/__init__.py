"""credit-operator: the Kopf operator turning CreditJob custom resources into batch/v1 CronJobs."""
