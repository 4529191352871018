// deploy-ledger: record a deployment (or its failure) from a Jenkins pipeline.
//
// A shared-library step: put this file in your library as vars/deployLedger.groovy, then
//
//   @Library('deploy-ledger') _
//   deployLedger(service: 'checkout', env: 'prod',
//                image: 'registry.example/checkout@sha256:<64 hex>',
//                status: 'succeeded', changeRef: 'CHG-1042')
//
// Needs python3 with pip on the agent, a "Secret file" credential with the producer's
// private key (credentialsId, default 'deploy-ledger-key') and LEDGER_BOOTSTRAP in the
// environment (or bootstrap:). The run's time is the build's start (Jenkins gives none in
// its variables), so a retried step sends the same event; Jenkins gives no commit time.
// When Kafka does not take the event it is spooled in .deploy-ledger-spool/ (exit 5),
// archived as the build's artifact, and the build fails unless flush: true (a flush job
// picks the artifacts up). Anything else fails the build. docs/integrations.md has the
// whole setup and the mapping.

def call(Map args = [:]) {
    for (name in ['service', 'env', 'image']) {
        if (!args[name]) {
            error("deployLedger: ${name} is required")
        }
    }
    def started = new Date(currentBuild.startTimeInMillis)
        .format("yyyy-MM-dd'T'HH:mm:ss.SSS'Z'", TimeZone.getTimeZone('UTC'))
    def settings = [
        "DEPLOY_LEDGER_SERVICE=${args.service}",
        "DEPLOY_LEDGER_ENV=${args.env}",
        "DEPLOY_LEDGER_IMAGE=${args.image}",
        "DEPLOY_LEDGER_STATUS=${args.status ?: 'succeeded'}",
        "DEPLOY_LEDGER_CHANGE_REF=${args.changeRef ?: ''}",
        "DEPLOY_LEDGER_REASON=${args.reason ?: ''}",
        "DEPLOY_LEDGER_KEY_ID=${args.keyId ?: 'ci-jenkins'}",
        "DEPLOY_LEDGER_TIME=${started}",
        "DEPLOY_LEDGER_GATE=${args.gate ? 'true' : 'false'}",
        "DEPLOY_LEDGER_DRY_RUN=${args.dryRun ? 'true' : 'false'}",
        "DEPLOY_LEDGER_PACKAGE=${args.packageSpec ?: 'deploy-ledger'}",
        "DEPLOY_LEDGER_VENV=${env.WORKSPACE_TMP ?: pwd(tmp: true)}/deploy-ledger-venv",
    ]
    if (args.bootstrap) {
        settings << "LEDGER_BOOTSTRAP=${args.bootstrap}"
    }
    if (args.apiUrl) {
        settings << "LEDGER_API_URL=${args.apiUrl}"
    }
    def code = 0
    withCredentials([file(credentialsId: args.credentialsId ?: 'deploy-ledger-key',
                          variable: 'LEDGER_KEY')]) {
        withEnv(settings) {
            code = sh(returnStatus: true, label: 'deploy-ledger', script: '''
set -e
if [ ! -x "$DEPLOY_LEDGER_VENV/bin/ledger" ]; then
    python3 -m venv "$DEPLOY_LEDGER_VENV"
    "$DEPLOY_LEDGER_VENV/bin/python" -m pip install --disable-pip-version-check --quiet "$DEPLOY_LEDGER_PACKAGE"
fi
PATH="$DEPLOY_LEDGER_VENV/bin:$PATH"
ledger --version
if [ "$DEPLOY_LEDGER_GATE" = "true" ]; then
    if [ -z "${LEDGER_API_URL:-}" ]; then
        echo "error: gate: true needs apiUrl (the consumer's API)" >&2
        exit 2
    fi
    set -- --api "$LEDGER_API_URL" --service "$DEPLOY_LEDGER_SERVICE" \
        --env "$DEPLOY_LEDGER_ENV" --image "$DEPLOY_LEDGER_IMAGE" \
        --actor "${BUILD_USER_ID:-ci/jenkins/$JOB_NAME}"
    if [ -n "$DEPLOY_LEDGER_CHANGE_REF" ]; then set -- "$@" --change-ref "$DEPLOY_LEDGER_CHANGE_REF"; fi
    ledger gate "$@"
fi
set -- --service "$DEPLOY_LEDGER_SERVICE" --env "$DEPLOY_LEDGER_ENV" \
    --image "$DEPLOY_LEDGER_IMAGE" --status "$DEPLOY_LEDGER_STATUS" --time "$DEPLOY_LEDGER_TIME"
if [ -n "$DEPLOY_LEDGER_CHANGE_REF" ]; then set -- "$@" --change-ref "$DEPLOY_LEDGER_CHANGE_REF"; fi
if [ -n "$DEPLOY_LEDGER_REASON" ]; then set -- "$@" --reason "$DEPLOY_LEDGER_REASON"; fi
ledger ingest ci "$@" --dry-run
if [ "$DEPLOY_LEDGER_DRY_RUN" = "true" ]; then exit 0; fi
code=0
ledger ingest ci "$@" --key-id "$DEPLOY_LEDGER_KEY_ID" --spool "$WORKSPACE/.deploy-ledger-spool" || code=$?
exit "$code"
''')
        }
    }
    if (code == 5) {
        archiveArtifacts(artifacts: '.deploy-ledger-spool/**', allowEmptyArchive: false)
        def where = "${env.BUILD_URL}artifact/.deploy-ledger-spool/"
        if (args.flush) {
            unstable("deployLedger: the event is not in the ledger yet: spooled at ${where}; the flush job will send it")
        } else {
            error("deployLedger: the event is not in the ledger: it is spooled at ${where}; send it with `ledger spool flush`, or pass flush: true once a flush job picks the artifacts up (docs/integrations.md)")
        }
    } else if (code == 1 && args.gate) {
        error('deployLedger: the gate refused the change (ledger gate exit 1): not recorded, not deployed')
    } else if (code != 0) {
        error("deployLedger: the event could be neither delivered nor spooled (ledger exit ${code})")
    }
}
