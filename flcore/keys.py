"""Message keys, config keys and metric names shared by ServerApp, ClientApp and reports."""

# Records inside a Message's RecordDict.
ARRAYS = "arrays"
CONFIG = "config"
METRICS = "metrics"
SITE = "site"  # ConfigRecord in replies: which site answered

# MetricRecord keys.
NUM_EXAMPLES = "num-examples"  # Flower's default weighting key
NUM_POSITIVE = "num-positive"
TRAIN_LOSS = "train-loss"
EVAL_LOSS = "eval-loss"

# ConfigRecord keys sent with train/evaluate messages.
SERVER_ROUND = "server-round"
LOCAL_EPOCHS = "local-epochs"
LEARNING_RATE = "learning-rate"
BATCH_SIZE = "batch-size"
PROXIMAL_MU = "proximal-mu"  # set by Flower's FedProx
SEED = "seed"
SCENARIO = "scenario"
SITE_NAME = "site-name"
PARAMS_JSON = "params-json"  # the domain's hyperparameters, as JSON
RUN_JSON = "run-json"  # the run configuration (RunConfig), as JSON

# Query messages (federated statistics before round 1).
QUERY_KIND = "query"
QUERY_FEATURE_STATS = "feature_stats"  # a Python identifier, as Flower requires
STAT_SUM = "sum"
STAT_SUMSQ = "sumsq"
INPUT_JSON = "input-json"  # in the statistics reply's site record: the model's input (shape, feature names), JSON

# Binary-classification metric names (also the names in results.json).
PR_AUC = "pr_auc"
ROC_AUC = "roc_auc"
RECALL_AT_1PCT_FPR = "recall_at_1pct_fpr"
SENSITIVITY = "sensitivity"
SPECIFICITY = "specificity"
THRESHOLD = "threshold"  # operating point chosen on validation data
PRECISION = "precision"
F1 = "f1"

# Governance and privacy.
RUN_ID = "run-id"  # ConfigRecord: the run's id (privacy ledgers and audit entries refer to it)
PLAN_HASH = "plan-hash"  # ConfigRecord: the coordinator's hash of the training plan
REFUSAL = "refusal"  # ConfigRecord in a site's reply: the rules it refuses the run under, as JSON
DP_EPSILON = "dp-epsilon"  # MetricRecord: epsilon a site has spent so far in this run
DP_NOISE = "dp-noise-multiplier"  # MetricRecord at run end: the noise multiplier a site trained with
UPDATE_NORM = "update-norm"  # MetricRecord: L2 norm of a site's update in a round
UNIT_WEIGHT = "unit-weight"  # MetricRecord: 1 for every site (equal weights, as accounted client-level DP needs)
QUERY_RUN_END = "run_end"  # query message after the last round: sites settle their privacy ledgers
RESUMED_AFTER = "resumed-after"  # ConfigRecord: the last round completed before the coordinator resumed the run

# Federated preprocessing of tables read through a schema (imputation values, category maps).
QUERY_TABLE_SUMMARY = "table_summary"  # query before the statistics round: each site's counts, sums, category sets
SUMMARY_JSON = "summary-json"  # ConfigRecord in the reply: the site's summary as JSON ("" if it needs none)
PREPROCESSING = "preprocessing-json"  # ConfigRecord in every later message: the federation's preprocessing, JSON

# fedxgb-hist: what a site's session cost, in its train reply's MetricRecord
XGB_SECONDS = "xgb-session-seconds"
XGB_BYTES_SENT = "xgb-bytes-sent"  # on the communicator's sockets, as the kernel counts them
XGB_BYTES_RECEIVED = "xgb-bytes-received"
