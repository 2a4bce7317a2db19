"""Privacy policy versions, notice, the consent ledger, deactivation, data export, cookies, analytics."""
