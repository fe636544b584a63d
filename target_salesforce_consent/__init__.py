"""Singer target that keeps Salesforce Leads or Contacts in step with Didomi consent."""
