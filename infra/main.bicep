// Teams EHR connector: everything one hospital deploys into its own subscription.
//   azd up                      (azure.yaml + main.parameters.json), or
//   the "Deploy to Azure" button (the ARM JSON the release workflow compiles from this file).
// Resource group, user-assigned identity, Flex Consumption function app, the app's own storage,
// one storage account per selected geography for the EHR user mapping, Key Vault, monitoring.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the environment (azd environment name); seeds resource names and the azd-env-name tag.')
param environmentName string

@minLength(1)
@description('Region of the resource group, function app, app storage, Key Vault and monitoring (a region offering Flex Consumption).')
param location string

@description('Resource group to create or update; empty = rg-<environmentName>.')
param resourceGroupName string = ''

@description('Geographies whose storage account holds the EHR user mapping (Microsoft 365 macro regions).')
@allowed(['americas', 'emea', 'apac', 'americas,emea', 'americas,apac', 'emea,apac', 'americas,emea,apac'])
param geographies string = 'americas'

@description('Region of the Americas mapping storage.')
@allowed([
  'eastus'
  'eastus2'
  'centralus'
  'northcentralus'
  'southcentralus'
  'westcentralus'
  'westus'
  'westus2'
  'westus3'
  'canadacentral'
  'canadaeast'
  'brazilsouth'
  'mexicocentral'
  'chilecentral'
])
param americasLocation string = 'eastus2'

@description('Region of the EMEA mapping storage.')
@allowed([
  'westeurope'
  'northeurope'
  'francecentral'
  'germanywestcentral'
  'italynorth'
  'polandcentral'
  'spaincentral'
  'swedencentral'
  'norwayeast'
  'switzerlandnorth'
  'uksouth'
  'ukwest'
  'austriaeast'
  'uaenorth'
  'qatarcentral'
  'southafricanorth'
  'israelcentral'
])
param emeaLocation string = 'westeurope'

@description('Region of the Asia Pacific mapping storage.')
@allowed([
  'southeastasia'
  'eastasia'
  'australiaeast'
  'australiasoutheast'
  'australiacentral'
  'japaneast'
  'japanwest'
  'koreacentral'
  'koreasouth'
  'newzealandnorth'
  'malaysiawest'
  'indonesiacentral'
  'centralindia'
  'southindia'
])
param apacLocation string = 'southeastasia'

@description('Replication of every storage account. ZRS keeps all copies in the chosen region.')
@allowed(['Standard_LRS', 'Standard_ZRS', 'Standard_GRS', 'Standard_GZRS', 'Standard_RAGRS', 'Standard_RAGZRS'])
param storageSkuName string = 'Standard_ZRS'

@description('Object id of the person or pipeline deploying (azd sets AZURE_PRINCIPAL_ID): may seed Key Vault secrets.')
param principalId string = ''

@allowed(['User', 'ServicePrincipal', 'Group'])
param principalType string = 'User'

@description('Tenant of the connector\'s Entra app registration; empty = this subscription\'s tenant.')
param entraTenantId string = ''

@description('Application (client) id of the connector\'s Entra app registration; set it after registering the app.')
param entraClientId string = ''

@description('Comma-separated tenant ids whose users may sign in; empty = the home tenant only.')
param entraAllowedTenantIds string = ''

@description('Microsoft Graph root for this cloud.')
param graphBaseUrl string = 'https://graph.microsoft.com'

@description('Public base URL when a custom domain fronts the app; empty = the app\'s default host name.')
param publicBaseUrl string = ''

@description('Queue carrying writeback events.')
param writebackQueueName string = 'writeback-events'

@description('URL of a ready-to-run release package (zip) to deploy with the infrastructure; empty = deploy with azd.')
param packageUri string = ''

var abbrs = loadJsonContent('abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
  application: 'teams-ehr-connector'
}
var functionAppName = '${abbrs.functionApp}${resourceToken}'
var deploymentContainerName = 'app-package-${take(functionAppName, 32)}-${take(resourceToken, 7)}'
var selectedGeographies = split(geographies, ',')
var deployAmericas = contains(selectedGeographies, 'americas')
var deployEmea = contains(selectedGeographies, 'emea')
var deployApac = contains(selectedGeographies, 'apac')

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: empty(resourceGroupName) ? '${abbrs.resourceGroup}${environmentName}' : resourceGroupName
  location: location
  tags: tags
}

module identity 'app/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: '${abbrs.managedIdentity}${resourceToken}'
    location: location
    tags: tags
  }
}

module monitoring 'app/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: '${abbrs.logAnalytics}${resourceToken}'
    applicationInsightsName: '${abbrs.appInsights}${resourceToken}'
    location: location
    tags: tags
    principalId: identity.outputs.principalId
  }
}

module keyVault 'app/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    name: '${abbrs.keyVault}${resourceToken}'
    location: location
    tags: tags
    principalId: identity.outputs.principalId
    deployerPrincipalId: principalId
    deployerPrincipalType: principalType
  }
}

module appStorage 'app/storage.bicep' = {
  name: 'storage-app'
  scope: rg
  params: {
    name: '${abbrs.storageAccount}${resourceToken}'
    location: location
    tags: tags
    skuName: storageSkuName
    principalId: identity.outputs.principalId
    grantBlobDataOwner: true
    deploymentContainerName: deploymentContainerName
  }
}

module americasStorage 'app/storage.bicep' = if (deployAmericas) {
  name: 'storage-americas'
  scope: rg
  params: {
    name: '${abbrs.storageAccount}am${resourceToken}'
    location: americasLocation
    tags: union(tags, { geography: 'americas' })
    skuName: storageSkuName
    principalId: identity.outputs.principalId
  }
}

module emeaStorage 'app/storage.bicep' = if (deployEmea) {
  name: 'storage-emea'
  scope: rg
  params: {
    name: '${abbrs.storageAccount}em${resourceToken}'
    location: emeaLocation
    tags: union(tags, { geography: 'emea' })
    skuName: storageSkuName
    principalId: identity.outputs.principalId
  }
}

module apacStorage 'app/storage.bicep' = if (deployApac) {
  name: 'storage-apac'
  scope: rg
  params: {
    name: '${abbrs.storageAccount}ap${resourceToken}'
    location: apacLocation
    tags: union(tags, { geography: 'apac' })
    skuName: storageSkuName
    principalId: identity.outputs.principalId
  }
}

module api 'app/api.bicep' = {
  name: 'api'
  scope: rg
  params: {
    name: functionAppName
    planName: '${abbrs.serverFarm}${resourceToken}'
    location: location
    tags: tags
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    appStorageName: appStorage.outputs.name
    deploymentContainerName: deploymentContainerName
    americasTableEndpoint: deployAmericas ? americasStorage!.outputs.tableEndpoint : ''
    americasQueueEndpoint: deployAmericas ? americasStorage!.outputs.queueEndpoint : ''
    emeaTableEndpoint: deployEmea ? emeaStorage!.outputs.tableEndpoint : ''
    emeaQueueEndpoint: deployEmea ? emeaStorage!.outputs.queueEndpoint : ''
    apacTableEndpoint: deployApac ? apacStorage!.outputs.tableEndpoint : ''
    apacQueueEndpoint: deployApac ? apacStorage!.outputs.queueEndpoint : ''
    keyVaultUri: keyVault.outputs.uri
    applicationInsightsConnectionString: monitoring.outputs.connectionString
    publicBaseUrl: publicBaseUrl
    entraTenantId: empty(entraTenantId) ? subscription().tenantId : entraTenantId
    entraClientId: entraClientId
    entraAllowedTenantIds: entraAllowedTenantIds
    graphBaseUrl: graphBaseUrl
    writebackQueueName: writebackQueueName
    packageUri: packageUri
  }
}

// azd stores these outputs in the environment; the post-provision hook reads them.
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = subscription().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = api.outputs.name
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output AZURE_KEY_VAULT_URI string = keyVault.outputs.uri
output PUBLIC_BASE_URL string = api.outputs.uri
output MAPPING_GEOGRAPHIES string = geographies
