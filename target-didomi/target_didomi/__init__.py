"""target-didomi: consent changes made in Salesforce, written to Didomi as consent events."""
