// The connector's function app on the Flex Consumption plan (FC1), Python 3.11, running as the
// user-assigned identity. Every key of the settings object (shared/kernel/settings.py SETTING_KEYS) is set
// here; storage connections are identity-based (NAME__tableServiceUri/__queueServiceUri/
// __credential/__clientId) and every secret is a Key Vault reference, never a literal.
param name string
param planName string
param location string
param tags object

param identityId string
param identityClientId string

@description('The app\'s own storage account: host storage, configuration tables, OAuth state, queues.')
param appStorageName string
param deploymentContainerName string

@description('Per-geography storage for the EHR user mapping; empty endpoints = geography not deployed.')
param americasTableEndpoint string = ''
param americasQueueEndpoint string = ''
param emeaTableEndpoint string = ''
param emeaQueueEndpoint string = ''
param apacTableEndpoint string = ''
param apacQueueEndpoint string = ''

param keyVaultUri string
param applicationInsightsConnectionString string

@description('Public base URL when a custom domain fronts the app; empty = the app\'s default host name.')
param publicBaseUrl string = ''
param entraTenantId string
param entraClientId string
param entraAllowedTenantIds string
param graphBaseUrl string
param writebackQueueName string

@minValue(1)
@maxValue(60)
param httpTimeoutSeconds int = 10

@description('Minutes past the appointment start (or the patient\'s arrival, if later) after which the waiting room tells the patient to call their clinic.')
@minValue(1)
@maxValue(240)
param waitingRoomGiveUpMinutes int = 15

@description('URL of a ready-to-run release package (zip) to deploy with the infrastructure; empty = deploy with azd.')
param packageUri string = ''

@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 100

// Instance memory: 512 MB. Flex Consumption bills the whole instance memory (GB-s) while any function runs, and at
// 50,000 visits a day both scaling groups (HTTP, the writeback queue) are busy most of clinic hours, so the size is
// the largest lever on cost (benchmarks/cost.py: ~$0.046 per 1,000 visits at 512 MB, ~$0.10 at 2048 MB). Measured
// (README "Performance and cost"): the Python worker's peak resident memory is ~105 MB under 500 concurrent launches
// and ~85 MB draining the writeback queue with 24 messages in flight, leaving ~400 MB for the Functions host and the
// OS. CPU scales with memory (~0.25 vCPU at 512 MB): a warm launch's ~7 ms of CPU is ~28 ms there, and the 8 a.m.
// peak (2,000 launches a minute) needs ~0.25 cores, i.e. about two instances. Raise it if the instances' memory
// working set (Azure Monitor) runs close to the limit.
@allowed([512, 2048, 4096])
param instanceMemoryMB int = 512

@description('Share of traces exported to Application Insights (0 to 1, as text): 0.1 keeps whole traces of one request in ten (connector/telemetry.py).')
param telemetrySamplingRatio string = '0.1'

// Threads of the Python worker (PYTHON_THREADPOOL_THREAD_COUNT). Every function is a plain def, so each running
// invocation holds a thread while it waits on the EHR, Graph or storage. Flex Consumption scales HTTP functions
// together and every queue or timer function on instances of its own, so one worker runs at most:
//   HTTP instances: httpPerInstanceConcurrency (8; 16 on 2048 MB) invocations, plus as many requests for our JWKS,
//     which the EHR fetches while a launch's token request is in flight (a cache miss at the EHR): 16 (32);
//   the writeback queue's instances: batchSize 16 + newBatchThreshold 8 (host.json) = 24 messages in flight.
// 48 leaves a margin of half again over the larger (32, at 2048 MB), and each idle thread costs only its stack. The local
// host runs every function in one process, so local.settings.sample.json keeps 64 (16 + 16 + 24 + timers).
@description('Threads of the Python worker (PYTHON_THREADPOOL_THREAD_COUNT): at least the invocations an instance runs at once (see the comment above).')
@minValue(1)
@maxValue(256)
param workerThreadCount int = 48

// 8 on a 512 MB instance (~0.25 vCPU): 8 launches in flight, each ~0.4 s long and ~7 ms of CPU, keep about a quarter
// of that vCPU busy, so a burst scales out rather than queueing on one small instance (16 suits 2048 MB).
@description('HTTP invocations one instance runs at once before Flex Consumption adds an instance (8 for 512 MB instances, 16 for 2048 MB); the worker thread count above is sized from it.')
@minValue(1)
@maxValue(1000)
param httpPerInstanceConcurrency int = 8

resource appStorage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: appStorageName
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: union(tags, { 'azd-service-name': 'api' })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientAffinityEnabled: false
    keyVaultReferenceIdentity: identityId
    publicNetworkAccess: 'Enabled'
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      remoteDebuggingEnabled: false
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${appStorage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
        triggers: {
          http: {
            perInstanceConcurrency: httpPerInstanceConcurrency
          }
        }
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }

  resource ftpCredentials 'basicPublishingCredentialsPolicies' = {
    name: 'ftp'
    properties: {
      allow: false
    }
  }

  resource scmCredentials 'basicPublishingCredentialsPolicies' = {
    name: 'scm'
    properties: {
      allow: false
    }
  }
}

// Identity-based connection: the host and the storage factory use the endpoints with the
// user-assigned identity (credential + clientId); no account key exists to leak.
var hostStorageSettings = {
  AzureWebJobsStorage__blobServiceUri: appStorage.properties.primaryEndpoints.blob
  AzureWebJobsStorage__queueServiceUri: appStorage.properties.primaryEndpoints.queue
  AzureWebJobsStorage__tableServiceUri: appStorage.properties.primaryEndpoints.table
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
}

// A geography that was not selected gets no setting: the settings object treats it as not configured.
var americasSettings = empty(americasTableEndpoint) ? {} : {
  STORAGE_AMERICAS__tableServiceUri: americasTableEndpoint
  STORAGE_AMERICAS__queueServiceUri: americasQueueEndpoint
  STORAGE_AMERICAS__credential: 'managedidentity'
  STORAGE_AMERICAS__clientId: identityClientId
}
var emeaSettings = empty(emeaTableEndpoint) ? {} : {
  STORAGE_EMEA__tableServiceUri: emeaTableEndpoint
  STORAGE_EMEA__queueServiceUri: emeaQueueEndpoint
  STORAGE_EMEA__credential: 'managedidentity'
  STORAGE_EMEA__clientId: identityClientId
}
var apacSettings = empty(apacTableEndpoint) ? {} : {
  STORAGE_APAC__tableServiceUri: apacTableEndpoint
  STORAGE_APAC__queueServiceUri: apacQueueEndpoint
  STORAGE_APAC__credential: 'managedidentity'
  STORAGE_APAC__clientId: identityClientId
}

// Versionless Key Vault references: the app always reads the current version of each secret.
var connectorSettings = {
  PUBLIC_BASE_URL: empty(publicBaseUrl) ? 'https://${site.properties.defaultHostName}' : publicBaseUrl
  ENTRA_AUTHORITY_HOST: environment().authentication.loginEndpoint
  ENTRA_TENANT_ID: entraTenantId
  ENTRA_CLIENT_ID: entraClientId
  ENTRA_CLIENT_SECRET: '@Microsoft.KeyVault(SecretUri=${keyVaultUri}secrets/entra-client-secret/)'
  ENTRA_ALLOWED_TENANT_IDS: entraAllowedTenantIds
  GRAPH_BASE_URL: graphBaseUrl
  GRAPH_CLIENT_STATE: '@Microsoft.KeyVault(SecretUri=${keyVaultUri}secrets/graph-client-state/)'
  GRAPH_ENCRYPTION_CERTIFICATE: '@Microsoft.KeyVault(SecretUri=${keyVaultUri}secrets/graph-encryption-certificate/)'
  SIGNING_KEYS: '@Microsoft.KeyVault(SecretUri=${keyVaultUri}secrets/signing-keys/)'
  CONNECTOR_SECRET: '@Microsoft.KeyVault(SecretUri=${keyVaultUri}secrets/connector-secret/)'
  SEALING_KEYS: '@Microsoft.KeyVault(SecretUri=${keyVaultUri}secrets/sealing-keys/)'
  WRITEBACK_QUEUE_NAME: writebackQueueName
  OUTBOUND_ALLOWED_HOSTS: ''
  HTTP_TIMEOUT_SECONDS: string(httpTimeoutSeconds)
  WAITING_ROOM_GIVE_UP_MINUTES: string(waitingRoomGiveUpMinutes)
  APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsightsConnectionString
  TELEMETRY_SAMPLING_RATIO: telemetrySamplingRatio
}

// Telemetry: the app exports through connector/telemetry.py (azure-monitor-opentelemetry); the
// worker only propagates the host's trace context (PYTHON_ENABLE_OPENTELEMETRY), and both the host
// and the exporter authenticate ingestion with the app identity (local auth is off).
var telemetrySettings = {
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'Authorization=AAD;ClientId=${identityClientId}'
  PYTHON_ENABLE_OPENTELEMETRY: 'true'
}

// The worker's default pool is min(32, CPUs + 4) threads: a few launches waiting on the EHR would fill it, and
// the EHR's fetch of our JWKS during a token request would then wait behind them.
var workerSettings = {
  PYTHON_THREADPOOL_THREAD_COUNT: string(workerThreadCount)
}

resource appSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: site
  name: 'appsettings'
  properties: union(hostStorageSettings, americasSettings, emeaSettings, apacSettings, connectorSettings, telemetrySettings, workerSettings)
}

// Optional: deploy a ready-to-run package (the release zip) together with the infrastructure. The
// documented shape for Flex Consumption One Deploy: a top-level resource named '<app>/onedeploy'.
resource oneDeploy 'Microsoft.Web/sites/extensions@2024-04-01' = if (!empty(packageUri)) {
  #disable-next-line use-parent-property
  name: '${site.name}/onedeploy'
  properties: {
    packageUri: packageUri
    remoteBuild: false
  }
  dependsOn: [
    appSettings
  ]
}

output name string = site.name
output uri string = empty(publicBaseUrl) ? 'https://${site.properties.defaultHostName}' : publicBaseUrl
