"""Salesforce client: OAuth client credentials, REST, describe, SOQL and Bulk API 2.0 ingest."""

from .auth import Token, fetch_token, instance_url_problem
from .bulk import BulkIngest, IngestOutcome, RowResult, build_csv, parse_result_csv
from .client import RetryPolicy, SalesforceClient
from .describe import FieldInfo, ObjectInfo, describe_object
from .errors import ApiLimitExceededError, AuthenticationError, JobFailedError, SalesforceError
from .soql import build_match_queries, quote

__all__ = [
    "ApiLimitExceededError",
    "AuthenticationError",
    "BulkIngest",
    "FieldInfo",
    "IngestOutcome",
    "JobFailedError",
    "ObjectInfo",
    "RetryPolicy",
    "RowResult",
    "SalesforceClient",
    "SalesforceError",
    "Token",
    "build_csv",
    "build_match_queries",
    "describe_object",
    "fetch_token",
    "instance_url_problem",
    "parse_result_csv",
    "quote",
]
