"""tap-salesforce-consent: consent changes people made in Salesforce, from field history."""
