"""The keys a member's Flower node config may carry (``--node-config`` on a SuperNode)."""

DATA_DIR_KEY = "data-dir"  # a real member: its ImageFolder root
PARTITION_KEY = "partition-id"  # a simulated member: its partition of the synthetic set
AUDIT_LOG_KEY = "audit-log"  # a real member: its audit log (deployment.member_dir/audit.log)
POLICY_KEY = "policy"  # a real member: its privacy policy (deployment.member_dir/policy.yaml)
# a real member: the code digests it approved (deployment.member_dir/approved-code.txt)
APPROVED_CODE_KEY = "approved-code"
# a real member: where its images are prepared once (deployment.member_dir/cache)
CACHE_DIR_KEY = "cache-dir"
# a real member: its copy of the consortium's reference set (`member join --reference`)
REFERENCE_DIR_KEY = "reference-dir"
