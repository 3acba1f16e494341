"""The checklist as a SMART app (SMART App Launch 2, EHR launch): launch, callback, page, file in chart.

`link` builds the card's smart link (imported on the hook path); `routes` the pages; `oauth` the
authlib-based OAuth client; `sessions` the launch sessions in the database; `fhir` the two FHIR calls.
"""
